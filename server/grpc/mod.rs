//! The gRPC surface: the inference service, health and reflection, on one
//! tonic router, behind the layer that stamps each request's arrival and
//! deadline.

mod arrival;
mod service;
mod status;
mod stream;

use std::sync::Arc;

use oxserve_proto::FILE_DESCRIPTOR_SET;
use oxserve_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tonic::service::Routes;
use tower::Layer;

pub(crate) use arrival::Stamp;

use crate::health::Health;
use crate::inference::Inference;
use arrival::ArrivalLayer;
use service::InferenceService;

/// Every gRPC service, ready to serve connections.
pub(crate) type GrpcService = Stamp<Routes>;

/// Reflection over every service served, in both protocol versions: grpcurl
/// and ghz ask for v1 first and fall back to v1alpha; some GUI clients only
/// speak v1alpha. Both list all services, each other included.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
}

/// All services, ready to serve.
pub(crate) fn service(
    core: Inference,
    health: Arc<Health>,
    max_message_size: usize,
) -> Result<GrpcService, tonic_reflection::server::Error> {
    let health_server = health.service();
    let inference = GrpcInferenceServiceServer::new(InferenceService::new(core, health))
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size);
    let routes = Routes::new(inference)
        .add_service(health_server)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok(ArrivalLayer.layer(routes))
}

/// Only `grpc.health.v1.Health`, for the plaintext health listener.
pub(crate) fn health_only(health: &Arc<Health>) -> GrpcService {
    ArrivalLayer.layer(Routes::new(health.service()))
}
