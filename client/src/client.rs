//! The client and its unary RPCs; how a call is made is in `call`.

mod call;

pub(crate) use call::ready;

use std::{sync::Arc, time::Duration};

use oxserve_proto::health::{HealthCheckRequest, health_client::HealthClient};
use prost::Message;
use tonic::{
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::Channel,
};

use crate::{
    ClientBuilder, Error, InferBuilder, Result, RetryPolicy, ServingStatus,
    balance::{Backend, Pool},
    pb::{self, GrpcInferenceServiceClient},
};

/// The default limit, in bytes, on one message sent or received.
///
/// tonic's own default is 4 MiB, which a single image batch exceeds; servers
/// in this family commonly allow 64 MiB or more.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Metadata headers sent with every request.
pub(crate) type Headers = Arc<[(AsciiMetadataKey, AsciiMetadataValue)]>;

/// A client of one inference server, or of several balanced in turn.
///
/// Cloning is cheap and clones share the underlying HTTP/2 connections, so
/// clone freely into tasks rather than wrapping the client in a lock.
#[derive(Clone, Debug)]
pub struct Client {
    pool: Arc<Pool>,
    settings: Settings,
}

/// What a client's calls are made with; each clone has its own copy.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_send_message_size: usize,
    pub(crate) max_receive_message_size: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) metadata: Headers,
}

/// How one call is made, beyond the client's settings.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: bool,
    pub(crate) headers: &'a [(AsciiMetadataKey, AsciiMetadataValue)],
}

impl Client {
    /// Connects to `endpoint` (e.g. `"http://127.0.0.1:8001"`) with default
    /// options; see [`Client::builder`] for the others.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client> {
        Client::builder(endpoint).connect().await
    }

    /// Starts configuring a connection to `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::list(vec![endpoint.into()])
    }

    /// Starts configuring a client that sends each request to the next of
    /// `endpoints` in turn, one HTTP/2 connection per endpoint.
    ///
    /// ```no_run
    /// # async fn run() -> oxserve_client::Result<()> {
    /// let client = oxserve_client::Client::balanced(["http://10.0.0.1:8001", "http://10.0.0.2:8001"])
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn balanced<I>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        ClientBuilder::list(endpoints.into_iter().map(Into::into).collect())
    }

    /// Starts configuring a client whose endpoints are the addresses a DNS
    /// name resolves to, such as a Kubernetes headless Service
    /// (`http://oxserve-headless.models.svc.cluster.local:8001`). The name
    /// is resolved again every
    /// [`resolve_interval`](ClientBuilder::resolve_interval), so pods that
    /// come and go are followed; requests are balanced over the addresses
    /// as with [`Client::balanced`].
    pub fn dns(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::dns(endpoint.into())
    }

    /// Wraps an existing channel (a custom connector, tonic's own
    /// balancing), with the default message limits and retry policy and no
    /// request timeout.
    pub fn from_channel(channel: Channel) -> Client {
        let backend = Backend::new("channel".into(), None, channel);
        Client::new(
            Arc::new(Pool::new("channel".into(), vec![backend], None)),
            Settings {
                timeout: None,
                max_send_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                max_receive_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                retry: RetryPolicy::default(),
                metadata: Arc::new([]),
            },
        )
    }

    pub(crate) fn new(pool: Arc<Pool>, settings: Settings) -> Client {
        Client { pool, settings }
    }

    /// This client with a different per-request timeout (`None`: no limit).
    /// Other clones keep theirs.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.settings.timeout = timeout;
        self
    }

    /// This client with a different limit on one message, sent or received.
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Client {
        self.settings.max_send_message_size = bytes;
        self.settings.max_receive_message_size = bytes;
        self
    }

    /// This client with a different retry policy. Other clones keep theirs.
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Client {
        self.settings.retry = policy;
        self
    }

    /// The per-request timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.settings.timeout
    }

    /// The smaller of the limits on one message sent and one received.
    pub fn max_message_size(&self) -> usize {
        self.settings
            .max_send_message_size
            .min(self.settings.max_receive_message_size)
    }

    /// The limit on one request message, in bytes.
    pub fn max_send_message_size(&self) -> usize {
        self.settings.max_send_message_size
    }

    /// The limit on one response message, in bytes.
    pub fn max_receive_message_size(&self) -> usize {
        self.settings.max_receive_message_size
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.settings.retry
    }

    /// The endpoints requests are balanced over right now (for a DNS target,
    /// the addresses of its last resolution).
    pub fn endpoints(&self) -> Vec<String> {
        self.pool.names()
    }

    /// The generated client on the next endpoint's connection, with this
    /// client's message limits, for RPCs this type does not wrap. Calls
    /// through it are not retried and carry no configured headers.
    pub fn inference_client(&self) -> GrpcInferenceServiceClient<Channel> {
        self.settings.inference_client(self.raw_channel())
    }

    /// The generated `grpc.health.v1.Health` client on the next endpoint's
    /// connection (e.g. for `Watch`).
    pub fn health_client(&self) -> HealthClient<Channel> {
        HealthClient::new(self.raw_channel())
    }

    /// Waits until the server reports `service` SERVING on
    /// `grpc.health.v1.Health`: `""` for the server itself, or
    /// `"inference.GRPCInferenceService"` for ready to infer (every model
    /// loaded). It follows the status with `Watch` rather than polling; a
    /// server that cannot be reached yet (still starting, restarting) is
    /// tried again every 50 ms, so a client made with
    /// [`ClientBuilder::connect_lazy`] may wait for a server that is not
    /// listening yet.
    ///
    /// # Errors
    /// `DEADLINE_EXCEEDED` if it is not SERVING within `timeout`, with the
    /// last status or error seen.
    pub async fn wait_until_serving(&self, service: &str, timeout: Duration) -> Result<()> {
        let mut last = String::from("no answer");
        let wait = async {
            loop {
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                // The configured headers (an API key) go with it, as with
                // every call this type makes.
                let call = Call {
                    timeout: None,
                    retry: false,
                    headers: &[],
                };
                let request = self.request(request, call);
                match self.health_client().watch(request).await {
                    Ok(response) => {
                        let mut statuses = response.into_inner();
                        loop {
                            match statuses.message().await {
                                Ok(Some(answer)) => {
                                    let status = ServingStatus::from_wire(answer.status)?;
                                    if status.is_serving() {
                                        return Ok(());
                                    }
                                    last = format!("{status:?}");
                                }
                                // The stream ended (the server is shutting
                                // down) or broke: ask again.
                                Ok(None) => break,
                                Err(status) => {
                                    last = status.message().to_owned();
                                    break;
                                }
                            }
                        }
                    }
                    Err(status) => last = format!("{:?}: {}", status.code(), status.message()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(Error::Status {
                code: tonic::Code::DeadlineExceeded,
                message: format!("'{service}' was not SERVING within {timeout:?} (last: {last})"),
            }),
        }
    }

    fn raw_channel(&self) -> Channel {
        self.pool.any_channel().unwrap_or_else(|| {
            // Only a DNS pool can be empty, and it always has a fallback;
            // a channel to nowhere keeps this infallible regardless.
            tonic::transport::Endpoint::from_static("http://[::1]:1").connect_lazy()
        })
    }

    /// Whether the server is live (`ServerLive`).
    pub async fn is_live(&self) -> Result<bool> {
        let request = pb::ServerLiveRequest {};
        let response = self.unary(request).await?;
        Ok(response.live)
    }

    /// Whether the server is ready for inference (`ServerReady`).
    pub async fn is_ready(&self) -> Result<bool> {
        let request = pb::ServerReadyRequest {};
        let response = self.unary(request).await?;
        Ok(response.ready)
    }

    /// Whether a model is ready (`ModelReady`); `version: None` asks about
    /// the version the server would pick, normally the highest ready one.
    pub async fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool> {
        let request = pb::ModelReadyRequest {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        let response = self.unary(request).await?;
        Ok(response.ready)
    }

    /// The server's name, version and supported extensions
    /// (`ServerMetadata`).
    pub async fn server_metadata(&self) -> Result<pb::ServerMetadataResponse> {
        self.unary(pb::ServerMetadataRequest {}).await
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
        self.unary(request).await
    }

    /// A model's configuration (`ModelConfig`, a Triton extension):
    /// batching, instances, inputs and outputs with their dimensions.
    /// `version: None` asks about the version the server would pick.
    pub async fn model_config(&self, name: &str, version: Option<&str>) -> Result<pb::ModelConfig> {
        let request = pb::ModelConfigRequest {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        let response = self.unary(request).await?;
        response
            .config
            .ok_or_else(|| Error::decode(format!("ModelConfig for '{name}' has no config")))
    }

    /// Cumulative inference statistics (`ModelStatistics`, a Triton
    /// extension), one entry per model version: `name: None` asks about
    /// every model, `version: None` about every version.
    pub async fn model_statistics(
        &self,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<pb::ModelStatistics>> {
        let request = pb::ModelStatisticsRequest {
            name: name.unwrap_or_default().to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        let response = self.unary(request).await?;
        Ok(response.model_stats)
    }

    /// Asks `grpc.health.v1.Health/Check` about `service` (`""`: the whole
    /// server). An unknown service fails with `NOT_FOUND`.
    pub async fn health_check(&self, service: &str) -> Result<ServingStatus> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let response = self.unary(request).await?;
        ServingStatus::from_wire(response.status)
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
        let call = Call {
            timeout: self.settings.timeout,
            retry: self.may_retry_inference(&request),
            headers: &[],
        };
        self.infer_with(request, call).await
    }

    /// Whether `request` may be retried by default: inference is idempotent
    /// unless it is a step of a stateful sequence.
    pub(crate) fn may_retry_inference(&self, request: &pb::ModelInferRequest) -> bool {
        self.settings.retry.retries_inference() && !request.parameters.contains_key("sequence_id")
    }

    pub(crate) async fn infer_with(
        &self,
        request: pb::ModelInferRequest,
        call: Call<'_>,
    ) -> Result<pb::ModelInferResponse> {
        // tonic enforces the limit too, but while streaming the body out, so
        // the caller sees an opaque h2 reset (INTERNAL) instead of its
        // OUT_OF_RANGE; checking first keeps the code and a clear message.
        let len = request.encoded_len();
        let limit = self.settings.max_send_message_size;
        if len > limit {
            return Err(Error::Status {
                code: tonic::Code::OutOfRange,
                message: format!(
                    "request is {len} bytes, over the client's message limit of {limit} bytes"
                ),
            });
        }
        self.call(request, call).await
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod balance_tests;

#[cfg(all(test, feature = "tls"))]
mod tls_tests;
