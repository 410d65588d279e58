//! `inference.GRPCInferenceService`: thin handlers over the inference core
//! and the repository.

use std::sync::Arc;

use oxserve_proto::inference::model_metadata_response::TensorMetadata;
use oxserve_proto::inference::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::arrival::arrival;
use super::generated::grpc_inference_service_server::GrpcInferenceService;
use super::status::to_status;
use super::stream;
use crate::health::Health;
use crate::inference::{EXTENSIONS, Inference};
use crate::logging::{self, LogSettings, LogValue};
use crate::model_config::PLATFORM;
use crate::repository::LoadRequest;
use crate::shm::ShmError;
use crate::tensor::TensorSpec;

/// The inference service.
#[derive(Debug, Clone)]
pub(crate) struct InferenceService {
    core: Inference,
    health: Arc<Health>,
}

impl InferenceService {
    /// A service answering through `core`.
    pub(crate) fn new(core: Inference, health: Arc<Health>) -> Self {
        InferenceService { core, health }
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
        let ready = self.core.repository().get(&r.name, &r.version).is_ok();
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
        let repository = self.core.repository();
        let loaded = repository
            .get(&r.name, &r.version)
            .map_err(|e| to_status(e, ""))?;
        Ok(Response::new(ModelMetadataResponse {
            name: loaded.model.clone(),
            versions: repository
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
        let arrival = arrival(&request);
        let request = request.into_inner();
        let id = request.id.clone();
        self.core
            .infer(request, arrival)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, &id))
    }

    type ModelStreamInferStream = ReceiverStream<Result<ModelStreamInferResponse, Status>>;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let arrival = arrival(&request);
        Ok(Response::new(stream::serve(
            self.core.clone(),
            request.into_inner(),
            arrival.deadline,
            arrival.trace,
        )))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let loaded = self
            .core
            .repository()
            .get(&r.name, &r.version)
            .map_err(|e| to_status(e, ""))?;
        let mut config = loaded.config.clone();
        if loaded.auto_batch {
            // The batch size the server picked for now.
            config.max_batch_size = Some(i32::try_from(loaded.batch_limit()).unwrap_or(i32::MAX));
        }
        Ok(Response::new(ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let model_stats = self
            .core
            .repository()
            .statistics(&r.name, &r.version)
            .map_err(|e| to_status(e, ""))?;
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let r = request.into_inner();
        check_repository_name(&r.repository_name)?;
        let models = self.core.repository().index(r.ready);
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let r = request.into_inner();
        check_repository_name(&r.repository_name)?;
        let load = LoadRequest::from_parameters(&r.model_name, &r.parameters)
            .map_err(|e| to_status(e, ""))?;
        self.core
            .repository()
            .load_by_request(&r.model_name, load)
            .await
            .map_err(|e| to_status(e, ""))?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let r = request.into_inner();
        check_repository_name(&r.repository_name)?;
        // `unload_dependents` is accepted: without ensembles, nothing
        // depends on a model.
        self.core
            .repository()
            .unload_by_request(&r.model_name)
            .await
            .map_err(|e| to_status(e, ""))?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        use system_shared_memory_status_response::RegionStatus;
        let name = request.into_inner().name;
        let regions = self
            .core
            .shared_memory()
            .status(&name)
            .map_err(|e| Status::new(e.code(), e.to_string()))?;
        Ok(Response::new(SystemSharedMemoryStatusResponse {
            regions: regions
                .into_iter()
                .map(|r| {
                    let status = RegionStatus {
                        name: r.name.clone(),
                        key: r.key,
                        offset: r.offset,
                        byte_size: r.byte_size,
                    };
                    (r.name, status)
                })
                .collect(),
        }))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        let r = request.into_inner();
        self.core
            .shared_memory()
            .register(&r.name, &r.key, r.offset, r.byte_size)
            .map_err(|e| Status::new(e.code(), e.to_string()))?;
        Ok(Response::new(SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        self.core
            .shared_memory()
            .unregister(&request.into_inner().name);
        Ok(Response::new(SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        request: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        // Nothing can be registered, so there is nothing to report.
        let name = request.into_inner().name;
        if !name.is_empty() {
            let e = ShmError::UnknownRegion { name };
            return Err(Status::new(e.code(), e.to_string()));
        }
        Ok(Response::new(CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        let e = ShmError::CudaUnavailable;
        Err(Status::new(e.code(), e.to_string()))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        // perf_analyzer unregisters everything at start, whatever it uses:
        // with nothing registered, that succeeds.
        Ok(Response::new(CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(
        &self,
        request: Request<TraceSettingRequest>,
    ) -> Result<Response<TraceSettingResponse>, Status> {
        use trace_setting_response::SettingValue;
        let r = request.into_inner();
        let traces = self.core.traces();
        // A read, for the server or a model: the server's settings (none
        // are kept per model). A change goes through `update`.
        let settings = if r.settings.is_empty() {
            traces.settings()
        } else {
            let changes = r
                .settings
                .into_iter()
                .map(|(name, value)| (name, value.value))
                .collect();
            traces
                .update(&r.model_name, &changes)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        Ok(Response::new(TraceSettingResponse {
            settings: settings
                .into_iter()
                .map(|(name, value)| (name, SettingValue { value }))
                .collect(),
        }))
    }

    async fn log_settings(
        &self,
        request: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        use log_settings_request::setting_value::ParameterChoice as In;
        use log_settings_response::SettingValue;
        use log_settings_response::setting_value::ParameterChoice as Out;
        let changes: LogSettings = request
            .into_inner()
            .settings
            .into_iter()
            .filter_map(|(name, value)| {
                let value = match value.parameter_choice? {
                    In::BoolParam(b) => LogValue::Bool(b),
                    In::Uint32Param(n) => LogValue::Uint(n),
                    In::StringParam(s) => LogValue::Text(s),
                };
                Some((name, value))
            })
            .collect();
        let settings = if changes.is_empty() {
            logging::settings()
        } else {
            logging::update(&changes)
        }
        .map_err(|e| Status::new(e.code(), e.to_string()))?;
        Ok(Response::new(LogSettingsResponse {
            settings: settings
                .into_iter()
                .map(|(name, value)| {
                    let choice = match value {
                        LogValue::Bool(b) => Out::BoolParam(b),
                        LogValue::Uint(n) => Out::Uint32Param(n),
                        LogValue::Text(s) => Out::StringParam(s),
                    };
                    let value = SettingValue {
                        parameter_choice: Some(choice),
                    };
                    (name, value)
                })
                .collect(),
        }))
    }
}

/// oxserve serves one repository, which any name but the empty one misses.
fn check_repository_name(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "unknown repository '{name}': oxserve serves one model repository; leave repository_name empty"
        )))
    }
}
