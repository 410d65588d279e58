//! The connection to a server and its unary RPCs.

use std::{future::Future, time::Duration, time::Instant};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus as PbServingStatus,
    health_client::HealthClient,
};

use crate::{
    Error, InferBuilder, Result,
    pb::{self, GrpcInferenceServiceClient},
};

/// The default limit, in bytes, on one message sent or received.
///
/// tonic's own default is 4 MiB, which a single image batch exceeds; servers
/// in this family commonly allow 64 MiB or more.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// A client of one inference server.
///
/// Cloning is cheap and clones share the underlying HTTP/2 connection, so
/// clone freely into tasks rather than wrapping the client in a lock.
#[derive(Clone, Debug)]
pub struct Client {
    inference: GrpcInferenceServiceClient<Channel>,
    health: HealthClient<Channel>,
    timeout: Option<Duration>,
    max_message_size: usize,
}

/// Connection options for a [`Client`]; see [`Client::builder`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct ClientBuilder {
    endpoint: String,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    max_message_size: usize,
}

impl ClientBuilder {
    /// Limits how long establishing the connection may take. Default: no
    /// limit beyond the operating system's.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Limits each request. The deadline is sent to the server as
    /// `grpc-timeout` and enforced locally; a request that runs past it fails
    /// with [`tonic::Code::DeadlineExceeded`]. Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Limits the size of one message, sent or received, in bytes. Default:
    /// [`DEFAULT_MAX_MESSAGE_SIZE`] (64 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Connects, failing with [`Error::Connect`] if the server cannot be
    /// reached.
    pub async fn connect(self) -> Result<Client> {
        let channel = self
            .endpoint()?
            .connect()
            .await
            .map_err(|source| self.connect_error(source))?;
        Ok(self.with_channel(channel))
    }

    /// Returns a client at once and connects on its first request; a server
    /// that cannot be reached then fails that request with `UNAVAILABLE`.
    ///
    /// # Errors
    /// [`Error::Connect`] if the endpoint is not a valid URI.
    pub fn connect_lazy(self) -> Result<Client> {
        let channel = self.endpoint()?.connect_lazy();
        Ok(self.with_channel(channel))
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|source| self.connect_error(source))?;
        if let Some(timeout) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        Ok(endpoint)
    }

    fn connect_error(&self, source: tonic::transport::Error) -> Error {
        Error::Connect {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn with_channel(&self, channel: Channel) -> Client {
        Client::from_channel(channel)
            .with_timeout(self.timeout)
            .with_max_message_size(self.max_message_size)
    }
}

impl Client {
    /// Connects to `endpoint` (e.g. `"http://127.0.0.1:8001"`) with default
    /// options; see [`Client::builder`] for the others.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client> {
        Client::builder(endpoint).connect().await
    }

    /// Starts configuring a connection to `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            connect_timeout: None,
            timeout: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    /// Wraps an existing channel (for TLS, custom connectors or load
    /// balancing), with [`DEFAULT_MAX_MESSAGE_SIZE`] and no request timeout.
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            inference: GrpcInferenceServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            timeout: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
        .with_max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// This client with a different per-request timeout (`None`: no limit).
    /// Other clones keep theirs.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.timeout = timeout;
        self
    }

    /// This client with a different limit on one message, sent or received.
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Client {
        self.max_message_size = bytes;
        self.inference = self
            .inference
            .max_decoding_message_size(bytes)
            .max_encoding_message_size(bytes);
        self.health = self
            .health
            .max_decoding_message_size(bytes)
            .max_encoding_message_size(bytes);
        self
    }

    /// The per-request timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The limit on one message, sent or received, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The generated client, sharing this client's connection and message
    /// limits, for RPCs this type does not wrap.
    pub fn inference_client(&self) -> GrpcInferenceServiceClient<Channel> {
        self.inference.clone()
    }

    /// The generated `grpc.health.v1.Health` client, sharing this client's
    /// connection.
    pub fn health_client(&self) -> HealthClient<Channel> {
        self.health.clone()
    }

    /// Whether the server is live (`ServerLive`).
    pub async fn is_live(&self) -> Result<bool> {
        let call =
            |mut c: GrpcInferenceServiceClient<Channel>, r| async move { c.server_live(r).await };
        let response = unary(
            &self.inference,
            pb::ServerLiveRequest {},
            self.timeout,
            call,
        );
        Ok(response.await?.live)
    }

    /// Whether the server is ready for inference (`ServerReady`).
    pub async fn is_ready(&self) -> Result<bool> {
        let call =
            |mut c: GrpcInferenceServiceClient<Channel>, r| async move { c.server_ready(r).await };
        let response = unary(
            &self.inference,
            pb::ServerReadyRequest {},
            self.timeout,
            call,
        );
        Ok(response.await?.ready)
    }

    /// Whether a model is ready (`ModelReady`); `version: None` asks about
    /// the version the server would pick, normally the highest ready one.
    pub async fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool> {
        let request = pb::ModelReadyRequest {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        let call =
            |mut c: GrpcInferenceServiceClient<Channel>, r| async move { c.model_ready(r).await };
        Ok(unary(&self.inference, request, self.timeout, call)
            .await?
            .ready)
    }

    /// The server's name, version and supported extensions
    /// (`ServerMetadata`).
    pub async fn server_metadata(&self) -> Result<pb::ServerMetadataResponse> {
        let call = |mut c: GrpcInferenceServiceClient<Channel>, r| async move {
            c.server_metadata(r).await
        };
        unary(
            &self.inference,
            pb::ServerMetadataRequest {},
            self.timeout,
            call,
        )
        .await
    }

    /// A model's versions, platform, inputs and outputs (`ModelMetadata`).
    pub async fn model_metadata(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<pb::ModelMetadataResponse> {
        let request = pb::ModelMetadataRequest {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        let call = |mut c: GrpcInferenceServiceClient<Channel>, r| async move {
            c.model_metadata(r).await
        };
        unary(&self.inference, request, self.timeout, call).await
    }

    /// Asks `grpc.health.v1.Health/Check` about `service` (`""`: the whole
    /// server). An unknown service fails with `NOT_FOUND`.
    pub async fn health_check(&self, service: &str) -> Result<ServingStatus> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let call = |mut c: HealthClient<Channel>, r| async move { c.check(r).await };
        let status = unary(&self.health, request, self.timeout, call)
            .await?
            .status;
        ServingStatus::from_wire(status)
    }

    /// Starts an inference request to `model`; see [`InferBuilder`].
    pub fn infer(&self, model: impl Into<String>) -> InferBuilder {
        InferBuilder::new(self.clone(), model.into())
    }

    /// Sends a request exactly as given (`ModelInfer`), for callers that
    /// need full control of the wire message, malformed ones included.
    pub async fn infer_raw(
        &self,
        request: pb::ModelInferRequest,
    ) -> Result<pb::ModelInferResponse> {
        self.infer_with_timeout(request, self.timeout).await
    }

    pub(crate) async fn infer_with_timeout(
        &self,
        request: pb::ModelInferRequest,
        timeout: Option<Duration>,
    ) -> Result<pb::ModelInferResponse> {
        // tonic enforces the limit too, but while streaming the body out, so
        // the caller sees an opaque h2 reset (INTERNAL) instead of its
        // OUT_OF_RANGE; checking first keeps the code and a clear message.
        let len = prost::Message::encoded_len(&request);
        if len > self.max_message_size {
            return Err(Error::Status {
                code: tonic::Code::OutOfRange,
                message: format!(
                    "request is {len} bytes, over the client's message limit of {} bytes",
                    self.max_message_size
                ),
            });
        }
        let call =
            |mut c: GrpcInferenceServiceClient<Channel>, r| async move { c.model_infer(r).await };
        unary(&self.inference, request, timeout, call).await
    }
}

/// Runs one unary call on a clone of `client` (the generated clients need
/// `&mut self`, and cloning them is cheap), with the deadline applied.
async fn unary<C, Req, Resp, Fut>(
    client: &C,
    message: Req,
    timeout: Option<Duration>,
    call: impl FnOnce(C, tonic::Request<Req>) -> Fut,
) -> Result<Resp>
where
    C: Clone,
    Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
{
    let mut request = tonic::Request::new(message);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    let started = Instant::now();
    match call(client.clone(), request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => match timeout {
            // tonic's channel enforces `grpc-timeout` locally but reports a
            // miss as CANCELLED ("Timeout expired"); gRPC calls a missed
            // deadline DEADLINE_EXCEEDED, which is what callers match on.
            Some(timeout)
                if status.code() == tonic::Code::Cancelled && started.elapsed() >= timeout =>
            {
                Err(Error::Status {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("deadline of {timeout:?} exceeded"),
                })
            }
            _ => Err(status.into()),
        },
    }
}

/// A service's status as reported by `grpc.health.v1.Health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServingStatus {
    /// `UNKNOWN`: the server does not know yet.
    Unknown,
    /// `SERVING`: the only status a Kubernetes probe accepts.
    Serving,
    /// `NOT_SERVING`.
    NotServing,
    /// `SERVICE_UNKNOWN`: only sent by `Watch`; `Check` answers `NOT_FOUND`.
    ServiceUnknown,
}

impl ServingStatus {
    /// Whether this is [`ServingStatus::Serving`].
    pub fn is_serving(self) -> bool {
        self == ServingStatus::Serving
    }

    fn from_wire(value: i32) -> Result<Self> {
        match PbServingStatus::try_from(value) {
            Ok(PbServingStatus::Unknown) => Ok(ServingStatus::Unknown),
            Ok(PbServingStatus::Serving) => Ok(ServingStatus::Serving),
            Ok(PbServingStatus::NotServing) => Ok(ServingStatus::NotServing),
            Ok(PbServingStatus::ServiceUnknown) => Ok(ServingStatus::ServiceUnknown),
            Err(_) => Err(Error::decode(format!("unknown health status {value}"))),
        }
    }
}

impl From<ServingStatus> for PbServingStatus {
    fn from(status: ServingStatus) -> Self {
        match status {
            ServingStatus::Unknown => PbServingStatus::Unknown,
            ServingStatus::Serving => PbServingStatus::Serving,
            ServingStatus::NotServing => PbServingStatus::NotServing,
            ServingStatus::ServiceUnknown => PbServingStatus::ServiceUnknown,
        }
    }
}

#[cfg(test)]
mod tests;
