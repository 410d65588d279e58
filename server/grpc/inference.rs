//! `inference.GRPCInferenceService`: thin handlers over the repository.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::health::Health;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::proto::inference::model_metadata_response::TensorMetadata;
use crate::proto::inference::*;
use crate::repository::Repository;
use crate::tensor::{TensorSpec, decode_request, encode_outputs};

/// Platform reported for every model, as Triton's ONNX Runtime backend does.
pub const PLATFORM: &str = "onnxruntime_onnx";

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
            // None of the optional protocol extensions is served yet; listing
            // one would make clients call RPCs that do not exist.
            extensions: Vec::new(),
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
        let request = request.into_inner();
        let id = request.id.as_str();
        let loaded = self
            .repository
            .get(&request.model_name, &request.model_version)
            .map_err(|e| to_status(e, id))?;
        let decoded =
            decode_request(&loaded.spec, &request).map_err(|e| to_status(e.into(), id))?;
        let outputs = loaded.infer(decoded).await.map_err(|e| to_status(e, id))?;
        let (outputs, raw_output_contents) = encode_outputs(outputs);
        Ok(Response::new(ModelInferResponse {
            model_name: loaded.model.clone(),
            model_version: loaded.version.to_string(),
            id: request.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        }))
    }
}
