//! `inference.GRPCInferenceService`: thin handlers over the repository.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::status::to_status;
use super::{deadline, stream};
use crate::health::Health;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::proto::inference::model_metadata_response::TensorMetadata;
use crate::proto::inference::*;
use crate::repository::Repository;
use crate::tensor::{TensorSpec, decode_request, encode_outputs};

/// Platform reported for every model, as Triton's ONNX Runtime backend does.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Protocol extensions served, by their Triton names.
pub const EXTENSIONS: &[&str] = &["model_configuration", "statistics"];

/// The inference service.
#[derive(Debug, Clone)]
pub struct InferenceService {
    repository: Arc<Repository>,
    health: Arc<Health>,
}

impl InferenceService {
    /// A service answering from `repository`.
    pub fn new(repository: Arc<Repository>, health: Arc<Health>) -> Self {
        InferenceService { repository, health }
    }
}

fn tensor_metadata(specs: &[TensorSpec]) -> Vec<TensorMetadata> {
    specs
        .iter()
        .map(|t| TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.as_str().to_string(),
            shape: t.dims.clone(),
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        // Answering at all is being live.
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.health.is_ready();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = self.repository.get(&r.name, &r.version).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "oxserve".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            // Triton's names for the extensions served; clients (and
            // perf_analyzer) check this list before calling them.
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let loaded = self
            .repository
            .get(&r.name, &r.version)
            .map_err(|e| to_status(e, ""))?;
        Ok(Response::new(ModelMetadataResponse {
            name: loaded.model.clone(),
            versions: self
                .repository
                .ready_versions(&loaded.model)
                .iter()
                .map(u64::to_string)
                .collect(),
            platform: PLATFORM.to_string(),
            inputs: tensor_metadata(&loaded.spec.inputs),
            outputs: tensor_metadata(&loaded.spec.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let deadline = deadline::from_metadata(request.metadata());
        self.infer(request.into_inner(), deadline)
            .await
            .map(Response::new)
    }

    type ModelStreamInferStream = ReceiverStream<Result<ModelStreamInferResponse, Status>>;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let deadline = deadline::from_metadata(request.metadata());
        Ok(Response::new(stream::serve(
            self.clone(),
            request.into_inner(),
            deadline,
        )))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let loaded = self
            .repository
            .get(&r.name, &r.version)
            .map_err(|e| to_status(e, ""))?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(loaded.config.clone()),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let model_stats = self
            .repository
            .statistics(&r.name, &r.version)
            .map_err(|e| to_status(e, ""))?;
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }
}

impl InferenceService {
    /// One inference, for ModelInfer and each message of ModelStreamInfer:
    /// find the version, validate, queue, answer; the outcome and its time
    /// go into the version's statistics.
    pub(super) async fn infer(
        &self,
        request: ModelInferRequest,
        grpc_deadline: Option<Instant>,
    ) -> Result<ModelInferResponse, Status> {
        // One span per request: every log line below it carries these.
        let span = tracing::info_span!(
            "infer",
            model = %request.model_name,
            requested_version = %request.model_version,
            version = tracing::field::Empty,
            id = %request.id,
        );
        self.infer_in_span(request, grpc_deadline)
            .instrument(span)
            .await
    }

    async fn infer_in_span(
        &self,
        request: ModelInferRequest,
        grpc_deadline: Option<Instant>,
    ) -> Result<ModelInferResponse, Status> {
        let started = Instant::now();
        let id = request.id.as_str();
        let loaded = self
            .repository
            .get(&request.model_name, &request.model_version)
            .map_err(|e| to_status(e, id))?;
        tracing::Span::current().record("version", loaded.version);
        let _in_flight = loaded.stats.in_flight();
        let result = async {
            let timeout = deadline::from_parameters(&loaded.model, &request.parameters)?;
            let deadline = loaded.deadline(grpc_deadline, timeout);
            let decoded = decode_request(&loaded.spec, &request)?;
            loaded.infer(decoded, deadline).await
        }
        .await;
        let elapsed = started.elapsed();
        match result {
            Ok(outputs) => {
                loaded.stats.record_success(elapsed);
                let (outputs, raw_output_contents) = encode_outputs(outputs);
                Ok(ModelInferResponse {
                    model_name: loaded.model.clone(),
                    model_version: loaded.version.to_string(),
                    id: request.id,
                    parameters: Default::default(),
                    outputs,
                    raw_output_contents,
                })
            }
            Err(e) => {
                let status = to_status(e, id);
                loaded.stats.record_failure(elapsed, status.code());
                if status.code() == tonic::Code::Internal {
                    // The server's own failure: operators must see it.
                    tracing::error!(code = ?status.code(), error = status.message(), "inference failed");
                } else {
                    // Not at the default level: a client error is the
                    // client's news, and a flood of them must not flood the
                    // logs.
                    tracing::debug!(code = ?status.code(), error = status.message(), "request failed");
                }
                Err(status)
            }
        }
    }
}
