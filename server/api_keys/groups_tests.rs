use prost::Message;
use prost_reflect::DescriptorPool;

use super::*;

/// Every method of every service the gRPC port serves, read from the same
/// descriptor sets reflection serves.
fn served_methods() -> Vec<String> {
    let mut pool = DescriptorPool::new();
    for set in [
        oxserve_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set).expect("a descriptor set");
        pool.add_file_descriptor_set(set)
            .expect("descriptors that fit together");
    }
    pool.services()
        .flat_map(|service| {
            service
                .methods()
                .map(|m| format!("/{}/{}", service.full_name(), m.name()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_served_grpc_method_has_a_group() {
    let methods = served_methods();
    // The inference service's 20 RPCs, health's 2, reflection's 1 twice.
    assert!(methods.len() >= 24, "{methods:?}");
    let missing: Vec<&String> = methods.iter().filter(|m| grpc_group(m).is_none()).collect();
    assert!(
        missing.is_empty(),
        "methods without an API group: {missing:?}"
    );
}

#[test]
fn grpc_methods_fall_in_tritons_groups() {
    let expected = [
        (
            "/inference.GRPCInferenceService/ServerLive",
            ApiGroup::Health,
        ),
        (
            "/inference.GRPCInferenceService/ServerReady",
            ApiGroup::Health,
        ),
        (
            "/inference.GRPCInferenceService/ModelReady",
            ApiGroup::Health,
        ),
        ("/grpc.health.v1.Health/Check", ApiGroup::Health),
        ("/grpc.health.v1.Health/Watch", ApiGroup::Health),
        (
            "/inference.GRPCInferenceService/ServerMetadata",
            ApiGroup::Metadata,
        ),
        (
            "/inference.GRPCInferenceService/ModelMetadata",
            ApiGroup::Metadata,
        ),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            ApiGroup::Metadata,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ApiGroup::Metadata,
        ),
        (
            "/inference.GRPCInferenceService/ModelInfer",
            ApiGroup::Inference,
        ),
        (
            "/inference.GRPCInferenceService/ModelStreamInfer",
            ApiGroup::Inference,
        ),
        (
            "/inference.GRPCInferenceService/SystemSharedMemoryRegister",
            ApiGroup::SharedMemory,
        ),
        (
            "/inference.GRPCInferenceService/CudaSharedMemoryStatus",
            ApiGroup::SharedMemory,
        ),
        (
            "/inference.GRPCInferenceService/ModelConfig",
            ApiGroup::ModelConfig,
        ),
        (
            "/inference.GRPCInferenceService/RepositoryModelLoad",
            ApiGroup::ModelRepository,
        ),
        (
            "/inference.GRPCInferenceService/ModelStatistics",
            ApiGroup::Statistics,
        ),
        (
            "/inference.GRPCInferenceService/TraceSetting",
            ApiGroup::Trace,
        ),
        (
            "/inference.GRPCInferenceService/LogSettings",
            ApiGroup::Logging,
        ),
    ];
    for (path, group) in expected {
        assert_eq!(grpc_group(path), Some(group), "{path}");
    }
    for unknown in [
        "",
        "/",
        "/inference.GRPCInferenceService/Nope",
        "/inference.GRPCInferenceService",
        "/grpc.health.v1.Health/List",
        "/other.Service/ModelInfer",
    ] {
        assert_eq!(grpc_group(unknown), None, "{unknown}");
    }
}

/// Every route `http::service` declares, read from its source, with its
/// parameters filled in: a route added there without a group here fails.
#[test]
fn every_rest_route_has_a_group() {
    let source = include_str!("../http/mod.rs");
    let routes: Vec<String> = source
        .split(".route(")
        .skip(1)
        .filter_map(|s| s.trim_start().strip_prefix('"')?.split('"').next())
        .map(|r| {
            r.replace("{model}", "mlp")
                .replace("{version}", "1")
                .replace("{name}", "region")
        })
        .collect();
    assert!(routes.len() >= 30, "{routes:?}");
    let missing: Vec<&String> = routes.iter().filter(|r| rest_group(r).is_none()).collect();
    assert!(
        missing.is_empty(),
        "routes without an API group: {missing:?}"
    );
}

#[test]
fn rest_routes_fall_in_the_same_groups_as_their_rpcs() {
    let expected = [
        ("/v2/health/live", ApiGroup::Health),
        ("/v2/health/ready", ApiGroup::Health),
        ("/v2/models/mlp/ready", ApiGroup::Health),
        ("/v2/models/mlp/versions/1/ready", ApiGroup::Health),
        ("/v2", ApiGroup::Metadata),
        ("/v2/models/mlp", ApiGroup::Metadata),
        ("/v2/models/mlp/versions/1", ApiGroup::Metadata),
        ("/v2/models/mlp/infer", ApiGroup::Inference),
        ("/v2/models/mlp/versions/1/infer", ApiGroup::Inference),
        // A model may be called "ready" or "infer": position decides.
        ("/v2/models/infer/ready", ApiGroup::Health),
        ("/v2/models/ready/infer", ApiGroup::Inference),
        ("/v2/models/mlp/config", ApiGroup::ModelConfig),
        ("/v2/models/stats", ApiGroup::Statistics),
        ("/v2/models/mlp/versions/1/stats", ApiGroup::Statistics),
        ("/v2/systemsharedmemory/status", ApiGroup::SharedMemory),
        (
            "/v2/cudasharedmemory/region/r/register",
            ApiGroup::SharedMemory,
        ),
        ("/v2/repository/index", ApiGroup::ModelRepository),
        ("/v2/repository/models/mlp/load", ApiGroup::ModelRepository),
        ("/v2/logging", ApiGroup::Logging),
        ("/v2/trace/setting", ApiGroup::Trace),
        ("/v2/models/mlp/trace/setting", ApiGroup::Trace),
    ];
    for (path, group) in expected {
        assert_eq!(rest_group(path), Some(group), "{path}");
    }
    for unknown in [
        "/",
        "/v3",
        "/v2/",
        "/v2x",
        "/v2/models",
        "/v2/models/mlp/infer/",
        "/v2/models/mlp/versions/1/trace/setting",
        "/v2/models/mlp/explain",
        "/v2/health",
        "/metrics",
    ] {
        assert_eq!(rest_group(unknown), None, "{unknown}");
    }
}

#[test]
fn group_names_parse_and_unknown_ones_list_the_valid_ones() {
    for group in ApiGroup::ALL {
        assert_eq!(group.as_str().parse::<ApiGroup>(), Ok(group));
    }
    let error = "inferences".parse::<ApiGroup>().unwrap_err().to_string();
    assert!(error.contains("'inferences'"), "{error}");
    for group in ApiGroup::ALL {
        assert!(error.contains(group.as_str()), "{error}");
    }
    assert!(!ApiGroup::default_protected().contains(&ApiGroup::Health));
    assert_eq!(ApiGroup::default_protected().len(), 8);
}

#[test]
fn group_sets_hold_exactly_their_groups() {
    let set: GroupSet = [ApiGroup::Inference, ApiGroup::Logging]
        .into_iter()
        .collect();
    for group in ApiGroup::ALL {
        let member = matches!(group, ApiGroup::Inference | ApiGroup::Logging);
        assert_eq!(set.contains(group), member, "{group}");
    }
    assert!(GroupSet::default().is_empty());
    assert!(!set.is_empty());
}
