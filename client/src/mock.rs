//! An in-process mock server for the client's own tests.
//!
//! It speaks the real protocol over a real socket on an ephemeral port, so
//! the tests exercise the transport settings (message limits, deadlines,
//! health) that pure encode/decode tests cannot. Models:
//! - `echo` (version "1"): answers every input as an output of the same
//!   name, datatype, shape and raw bytes, restricted to the requested outputs;
//! - `sleep`: waits `sleep_ms` (request parameter) before answering;
//! - `big`: answers one UINT8 output of `size` (request parameter) bytes;
//! - `headers`: answers a BYTES output `headers` of `name=value` for each
//!   request header, sorted;
//! - `flaky`: fails with UNAVAILABLE while [`Mock::fail_next`] has failures
//!   left, then answers like `echo`;
//! - anything else: NOT_FOUND, prefixed with the request id like the
//!   reference server.
//!
//! RPCs the tests do not need (`ModelStreamInfer`, `ModelConfig`,
//! `ModelStatistics`) answer UNIMPLEMENTED, as a server without those
//! extensions does.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use oxserve_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use tonic::{Request, Response, Status, Streaming, transport::server::TcpIncoming};
use tonic_health::server::HealthReporter;

use crate::pb::{self, ParameterChoice, model_infer_response::InferOutputTensor};

/// Name under which the inference service reports health.
pub(crate) const SERVICE: &str = "inference.GRPCInferenceService";

pub(crate) struct Mock {
    pub(crate) addr: SocketAddr,
    pub(crate) health: HealthReporter,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// `ModelInfer` calls received.
    infers: AtomicUsize,
    /// How many more `flaky` calls fail.
    failures_left: AtomicUsize,
}

impl Mock {
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ModelInfer` calls this server has received.
    pub(crate) fn infers(&self) -> usize {
        self.state.infers.load(Ordering::SeqCst)
    }

    /// Makes the next `n` calls to `flaky` fail with UNAVAILABLE.
    pub(crate) fn fail_next(&self, n: usize) {
        self.state.failures_left.store(n, Ordering::SeqCst);
    }
}

/// Serves the mock on `127.0.0.1:0` until the test's runtime ends.
pub(crate) async fn start() -> Mock {
    start_with(tonic::transport::Server::builder()).await
}

/// Serves the mock over TLS with the test certificate for `localhost` and
/// `127.0.0.1` (signed by `client/tests/tls/ca.pem`).
#[cfg(feature = "tls")]
pub(crate) async fn start_tls() -> Mock {
    let identity = tonic::transport::Identity::from_pem(
        include_str!("../tests/tls/server.pem"),
        include_str!("../tests/tls/server.key"),
    );
    let tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    let builder = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("the test certificate is valid");
    start_with(builder).await
}

async fn start_with(mut builder: tonic::transport::Server) -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback is bindable in tests");
    let addr = listener.local_addr().expect("bound socket has an address");
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<GrpcInferenceServiceServer<MockService>>()
        .await;
    let state = Arc::new(State::default());
    let service = MockService {
        state: Arc::clone(&state),
    };
    let inference = GrpcInferenceServiceServer::new(service)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    tokio::spawn(
        builder
            .add_service(health_service)
            .add_service(inference)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Mock {
        addr,
        health,
        state,
    }
}

pub(crate) struct MockService {
    state: Arc<State>,
}

#[tonic::async_trait]
impl GrpcInferenceService for MockService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = request.name == "echo" && matches!(request.version.as_str(), "" | "1");
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "mock".into(),
            version: "0.0.0".into(),
            extensions: vec!["model_repository".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        if request.name != "echo" {
            return Err(Status::not_found(format!(
                "unknown model '{}'",
                request.name
            )));
        }
        Ok(Response::new(pb::ModelMetadataResponse {
            name: request.name,
            versions: vec!["1".into()],
            platform: "mock".into(),
            inputs: vec![],
            outputs: vec![],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        self.state.infers.fetch_add(1, Ordering::SeqCst);
        let headers = header_list(request.metadata());
        let request = request.into_inner();
        let mut response = pb::ModelInferResponse {
            model_name: request.model_name.clone(),
            model_version: "1".into(),
            id: request.id.clone(),
            ..Default::default()
        };
        match request.model_name.as_str() {
            "echo" => echo(&request, &mut response),
            "flaky" => {
                let failing = self
                    .state
                    .failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    return Err(Status::unavailable("flaky: failing on purpose"));
                }
                echo(&request, &mut response);
            }
            "headers" => {
                let raw = crate::codec::encode_bytes(&headers).expect("short headers");
                let shape = vec![headers.len() as i64];
                push_output(&mut response, "headers", "BYTES", shape, raw.into());
            }
            "sleep" => {
                let ms = uint_parameter(&request, "sleep_ms");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            "big" => {
                let size = uint_parameter(&request, "size");
                push_output(
                    &mut response,
                    "big",
                    "UINT8",
                    vec![size as i64],
                    vec![7; size as usize].into(),
                );
            }
            other => {
                return Err(Status::not_found(format!(
                    "[request id: {}] unknown model '{other}'",
                    request.id
                )));
            }
        }
        Ok(Response::new(response))
    }

    type ModelStreamInferStream = tokio_stream::Empty<Result<pb::ModelStreamInferResponse, Status>>;

    async fn model_stream_infer(
        &self,
        _: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Err(unimplemented("ModelStreamInfer"))
    }

    async fn model_config(
        &self,
        _: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        Err(unimplemented("ModelConfig"))
    }

    async fn model_statistics(
        &self,
        _: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        Err(unimplemented("ModelStatistics"))
    }

    async fn repository_index(
        &self,
        _: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        Err(unimplemented("RepositoryIndex"))
    }

    async fn repository_model_load(
        &self,
        _: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        Err(unimplemented("RepositoryModelLoad"))
    }

    async fn repository_model_unload(
        &self,
        _: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        Err(unimplemented("RepositoryModelUnload"))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        Err(unimplemented("SystemSharedMemoryStatus"))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        Err(unimplemented("SystemSharedMemoryRegister"))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        Err(unimplemented("SystemSharedMemoryUnregister"))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        Err(unimplemented("CudaSharedMemoryStatus"))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        Err(unimplemented("CudaSharedMemoryRegister"))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        Err(unimplemented("CudaSharedMemoryUnregister"))
    }

    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> Result<Response<pb::TraceSettingResponse>, Status> {
        Err(unimplemented("TraceSetting"))
    }

    async fn log_settings(
        &self,
        _: Request<pb::LogSettingsRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        Err(unimplemented("LogSettings"))
    }
}

/// What a server without an extension answers.
fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!("the mock does not implement {method}"))
}

/// Every ASCII header of a request as `name=value`, sorted.
fn header_list(metadata: &tonic::metadata::MetadataMap) -> Vec<String> {
    let mut headers: Vec<String> = metadata
        .iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                Some(format!("{}={}", key, value.to_str().unwrap_or("?")))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    headers.sort();
    headers
}

fn echo(request: &pb::ModelInferRequest, response: &mut pb::ModelInferResponse) {
    let wanted =
        |name: &str| request.outputs.is_empty() || request.outputs.iter().any(|o| o.name == name);
    for (input, raw) in request.inputs.iter().zip(&request.raw_input_contents) {
        if wanted(&input.name) {
            let (name, datatype) = (input.name.clone(), input.datatype.clone());
            push_output(response, &name, &datatype, input.shape.clone(), raw.clone());
        }
    }
}

fn push_output(
    response: &mut pb::ModelInferResponse,
    name: &str,
    datatype: &str,
    shape: Vec<i64>,
    raw: Bytes,
) {
    response.outputs.push(InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    });
    response.raw_output_contents.push(raw);
}

fn uint_parameter(request: &pb::ModelInferRequest, key: &str) -> u64 {
    match request
        .parameters
        .get(key)
        .and_then(|p| p.parameter_choice.clone())
    {
        Some(ParameterChoice::Uint64Param(value)) => value,
        _ => 0,
    }
}
