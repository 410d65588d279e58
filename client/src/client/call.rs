//! How a unary call is made: the endpoint it goes to, its attempts and
//! retries, its deadline and headers, and the generated stub it is sent
//! through.

use std::{future::Future, time::Duration, time::Instant};

use oxserve_proto::health::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient};
use tonic::{client::GrpcService, transport::Channel};

use super::{Call, Client, Settings};
use crate::{
    Error, Result, RetryEvent,
    balance::{Backend, Pool},
    pb::{self, GrpcInferenceServiceClient},
};

impl Client {
    /// An idempotent unary call with the client's defaults.
    pub(super) async fn unary<R: Unary>(&self, request: R) -> Result<R::Response> {
        let call = Call {
            timeout: self.settings.timeout,
            retry: true,
            headers: &[],
        };
        self.call(request, call).await
    }

    /// Makes a unary call on the next endpoint, trying again (on the
    /// endpoint after) as the retry policy allows. Each attempt sends a
    /// clone of the request, which shares its tensors (they are `Bytes`).
    pub(crate) async fn call<R: Unary>(
        &self,
        mut request: R,
        call: Call<'_>,
    ) -> Result<R::Response> {
        let policy = &self.settings.retry;
        let mut attempt = 1;
        loop {
            let backend = self.pool.pick();
            let result = match &backend {
                Some(backend) => {
                    // Without retries there is one attempt: no need to keep
                    // the request.
                    let message = if call.retry {
                        request.clone()
                    } else {
                        std::mem::take(&mut request)
                    };
                    self.attempt(backend, message, call).await
                }
                None => Err(self.no_endpoint()),
            };
            let error = match (result, &backend) {
                (Ok(response), Some(backend)) => {
                    self.pool.mark_up(backend);
                    return Ok(response);
                }
                (Ok(response), None) => return Ok(response),
                (Err(error), _) => error,
            };
            if let Some(backend) = &backend
                && error.is(tonic::Code::Unavailable)
            {
                self.pool.mark_down(backend);
            }
            if !(call.retry && policy.should_retry(attempt, &error)) {
                return Err(error);
            }
            let delay = policy.delay(attempt);
            policy.notify(&RetryEvent {
                method: R::METHOD,
                attempt,
                error: &error,
                endpoint: backend.as_ref().map_or(self.pool.target(), |b| b.name()),
                delay,
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One attempt of a unary call on `backend`.
    async fn attempt<R: Unary>(
        &self,
        backend: &Backend,
        message: R,
        call: Call<'_>,
    ) -> Result<R::Response> {
        let channel = ready(backend).await?;
        let request = self.request(message, call);
        let started = Instant::now();
        match R::send(&self.settings, channel, request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(status_error(status, call.timeout, started)),
        }
    }

    /// The error for a DNS target that has not resolved to any address.
    pub(crate) fn no_endpoint(&self) -> Error {
        Error::Status {
            code: tonic::Code::Unavailable,
            message: format!(
                "no endpoint: '{}' has not resolved to any address",
                self.pool.target()
            ),
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A request carrying `message`, the deadline and every header.
    pub(crate) fn request<T>(&self, message: T, call: Call<'_>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = call.timeout {
            request.set_timeout(timeout);
        }
        let metadata = request.metadata_mut();
        for (key, value) in self.settings.metadata.iter().chain(call.headers) {
            metadata.insert(key.clone(), value.clone());
        }
        request
    }
}

impl Settings {
    /// The generated inference client on `channel`, with these message
    /// limits.
    pub(crate) fn inference_client(&self, channel: Channel) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(self.max_receive_message_size)
            .max_encoding_message_size(self.max_send_message_size)
    }

    /// The generated health client on `channel`, with these message limits.
    fn health_client(&self, channel: Channel) -> HealthClient<Channel> {
        HealthClient::new(channel)
            .max_decoding_message_size(self.max_receive_message_size)
            .max_encoding_message_size(self.max_send_message_size)
    }
}

/// `backend`'s channel once it can take a call.
///
/// The generated stubs wait for this too, but report a failure as UNKNOWN;
/// a channel is only "not ready" when its connection task is gone, and
/// another endpoint (or a retry) may do better, hence UNAVAILABLE. The
/// returned channel holds its readiness, so the stub's own wait is
/// immediate.
pub(crate) async fn ready(backend: &Backend) -> Result<Channel> {
    let mut channel = backend.channel.clone();
    std::future::poll_fn(|cx| GrpcService::<tonic::body::Body>::poll_ready(&mut channel, cx))
        .await
        .map_err(|e| Error::Status {
            code: tonic::Code::Unavailable,
            message: format!("endpoint {} is not ready: {e}", backend.name()),
        })?;
    Ok(channel)
}

/// A unary RPC, named by its request message.
pub(crate) trait Unary: Clone + Default + Send + 'static {
    /// The RPC's response message.
    type Response;

    /// The method's name, as [`RetryEvent::method`] reports it.
    const METHOD: &'static str;

    /// Sends `request` through the generated stub on `channel`.
    fn send(
        settings: &Settings,
        channel: Channel,
        request: tonic::Request<Self>,
    ) -> impl Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send;
}

macro_rules! unary {
    ($($request:ty => $response:ty, $method:literal, $stub:ident.$rpc:ident;)*) => {$(
        impl Unary for $request {
            type Response = $response;
            const METHOD: &'static str = $method;

            fn send(
                settings: &Settings,
                channel: Channel,
                request: tonic::Request<Self>,
            ) -> impl Future<Output = Result<tonic::Response<$response>, tonic::Status>> + Send {
                let mut stub = settings.$stub(channel);
                async move { stub.$rpc(request).await }
            }
        }
    )*};
}

unary! {
    pb::ServerLiveRequest => pb::ServerLiveResponse, "ServerLive", inference_client.server_live;
    pb::ServerReadyRequest => pb::ServerReadyResponse, "ServerReady", inference_client.server_ready;
    pb::ModelReadyRequest => pb::ModelReadyResponse, "ModelReady", inference_client.model_ready;
    pb::ServerMetadataRequest => pb::ServerMetadataResponse, "ServerMetadata", inference_client.server_metadata;
    pb::ModelMetadataRequest => pb::ModelMetadataResponse, "ModelMetadata", inference_client.model_metadata;
    pb::ModelInferRequest => pb::ModelInferResponse, "ModelInfer", inference_client.model_infer;
    pb::ModelConfigRequest => pb::ModelConfigResponse, "ModelConfig", inference_client.model_config;
    pb::ModelStatisticsRequest => pb::ModelStatisticsResponse, "ModelStatistics", inference_client.model_statistics;
    HealthCheckRequest => HealthCheckResponse, "Check", health_client.check;
}

/// The client's error for a failed call.
pub(crate) fn status_error(
    status: tonic::Status,
    timeout: Option<Duration>,
    started: Instant,
) -> Error {
    match timeout {
        // tonic's channel enforces `grpc-timeout` locally but reports a
        // miss as CANCELLED ("Timeout expired"); gRPC calls a missed
        // deadline DEADLINE_EXCEEDED, which is what callers match on.
        Some(timeout)
            if status.code() == tonic::Code::Cancelled && started.elapsed() >= timeout =>
        {
            Error::Status {
                code: tonic::Code::DeadlineExceeded,
                message: format!("deadline of {timeout:?} exceeded"),
            }
        }
        _ => status.into(),
    }
}
