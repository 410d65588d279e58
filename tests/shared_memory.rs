//! System shared memory over gRPC and REST: registration, tensors read
//! from and written to regions, every bound checked, CUDA's clear refusal.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::collections::HashMap;

use common::{config, f32_bytes, post_json, rest_get, start, test_models};
use oxserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use oxserve_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use oxserve_proto::inference::*;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

/// A shared memory object under /dev/shm, removed when dropped.
struct Object {
    key: String,
}

impl Object {
    fn new(tag: &str, size: usize) -> Object {
        let key = format!("/oxserve-it-{tag}-{}", std::process::id());
        std::fs::write(Object::path_of(&key), vec![0u8; size]).unwrap();
        Object { key }
    }

    fn path_of(key: &str) -> String {
        format!("/dev/shm{key}")
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(Object::path_of(&self.key))
            .unwrap();
        file.write_all_at(bytes, offset as u64).unwrap();
    }

    fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        std::fs::read(Object::path_of(&self.key)).unwrap()[offset..offset + len].to_vec()
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Object::path_of(&self.key));
    }
}

fn shm(region: &str, size: i64, offset: i64) -> HashMap<String, InferParameter> {
    HashMap::from([
        ("shared_memory_region".to_string(), region.into()),
        ("shared_memory_byte_size".to_string(), size.into()),
        ("shared_memory_offset".to_string(), offset.into()),
    ])
}

fn input(name: &str, parameters: HashMap<String, InferParameter>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![1, 16],
        parameters,
        contents: None,
    }
}

async fn grpc(addr: std::net::SocketAddr) -> GrpcInferenceServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    GrpcInferenceServiceClient::new(channel)
}

#[tokio::test]
async fn tensors_travel_through_a_registered_region_over_grpc() {
    let server = start(config(&test_models())).await;
    let mut client = grpc(server.addr).await;
    let object = Object::new("grpc", 4096);
    let a: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let b = vec![1.0f32; 16];
    object.write(100 + 64, &f32_bytes(&a));

    // Bytes 100..356 of the object are the region.
    client
        .system_shared_memory_register(SystemSharedMemoryRegisterRequest {
            name: "r".into(),
            key: object.key.clone(),
            offset: 100,
            byte_size: 256,
        })
        .await
        .unwrap();
    let status = client
        .system_shared_memory_status(SystemSharedMemoryStatusRequest {
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.regions["r"].key, object.key);
    assert_eq!(status.regions["r"].byte_size, 256);

    // INPUT0 from the region, INPUT1 in the request; OUTPUT0 into the
    // region, OUTPUT1 in the response.
    let request = ModelInferRequest {
        model_name: "add_sub".into(),
        inputs: vec![
            input("INPUT0", shm("r", 64, 64)),
            input("INPUT1", HashMap::new()),
        ],
        raw_input_contents: vec![f32_bytes(&b).into()],
        outputs: vec![
            InferRequestedOutputTensor {
                name: "OUTPUT0".into(),
                parameters: shm("r", 64, 192),
            },
            InferRequestedOutputTensor {
                name: "OUTPUT1".into(),
                parameters: HashMap::new(),
            },
        ],
        ..Default::default()
    };
    let response = client
        .model_infer(request.clone())
        .await
        .unwrap()
        .into_inner();
    let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let diff: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    assert_eq!(object.read(100 + 192, 64), f32_bytes(&sum));
    assert!(
        response.raw_output_contents[0].is_empty(),
        "written to the region"
    );
    assert_eq!(response.raw_output_contents[1], f32_bytes(&diff));
    assert_eq!(
        response.outputs[0].parameters["shared_memory_region"],
        "r".into()
    );

    // Every bound is checked against the region, not the object.
    let mut past_end = request.clone();
    past_end.inputs[0].parameters = shm("r", 64, 200);
    let e = client.model_infer(past_end).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("past the end"), "{}", e.message());
    let mut wrong_size = request.clone();
    wrong_size.inputs[0].parameters = shm("r", 60, 0);
    let e = client.model_infer(wrong_size).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut small_output = request.clone();
    small_output.outputs[0].parameters = shm("r", 32, 0);
    let e = client.model_infer(small_output).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut unknown = request.clone();
    unknown.inputs[0].parameters = shm("nope", 64, 0);
    let e = client.model_infer(unknown).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut huge = request.clone();
    huge.inputs[0].parameters = shm("r", i64::MAX, i64::MAX);
    let e = client.model_infer(huge).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Unregistered, the region is gone; unregistering again is harmless.
    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest { name: "r".into() })
        .await
        .unwrap();
    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest { name: "r".into() })
        .await
        .unwrap();
    let e = client.model_infer(request).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn registrations_stay_inside_dev_shm_and_their_object() {
    let server = start(config(&test_models())).await;
    let mut client = grpc(server.addr).await;
    let object = Object::new("register", 128);
    let register =
        |name: &str, key: &str, offset: u64, byte_size: u64| SystemSharedMemoryRegisterRequest {
            name: name.into(),
            key: key.into(),
            offset,
            byte_size,
        };
    for (request, code) in [
        (
            register("a", "/../../etc/passwd", 0, 8),
            Code::InvalidArgument,
        ),
        (register("a", "/dir/key", 0, 8), Code::InvalidArgument),
        (register("a", "/..", 0, 8), Code::InvalidArgument),
        (
            register("a", "/oxserve-it-no-such-object", 0, 8),
            Code::NotFound,
        ),
        (register("a", &object.key, 64, 65), Code::InvalidArgument),
        (
            register("a", &object.key, u64::MAX, 2),
            Code::InvalidArgument,
        ),
        (register("a", &object.key, 0, 0), Code::InvalidArgument),
        (register("", &object.key, 0, 8), Code::InvalidArgument),
    ] {
        let e = client
            .system_shared_memory_register(request.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{request:?}: {}", e.message());
    }
    client
        .system_shared_memory_register(register("a", &object.key, 0, 128))
        .await
        .unwrap();
    let e = client
        .system_shared_memory_register(register("a", &object.key, 0, 8))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = client
        .system_shared_memory_status(SystemSharedMemoryStatusRequest { name: "b".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // An empty name unregisters everything.
    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest::default())
        .await
        .unwrap();
    let status = client
        .system_shared_memory_status(SystemSharedMemoryStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.regions.is_empty());

    // CUDA shared memory: nothing registered, and a clear refusal.
    let e = client
        .cuda_shared_memory_register(CudaSharedMemoryRegisterRequest {
            name: "g".into(),
            raw_handle: vec![0; 64],
            device_id: 0,
            byte_size: 64,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("CUDA"), "{}", e.message());
    client
        .cuda_shared_memory_unregister(CudaSharedMemoryUnregisterRequest::default())
        .await
        .unwrap();
    let status = client
        .cuda_shared_memory_status(CudaSharedMemoryStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.regions.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tensors_travel_through_a_registered_region_over_rest() {
    let server = start(config(&test_models())).await;
    let h = server.http_addr;
    let object = Object::new("rest", 512);
    let a: Vec<f32> = (0..16).map(|i| i as f32 * 2.0).collect();
    object.write(0, &f32_bytes(&a));
    let registered = post_json(
        h,
        "/v2/systemsharedmemory/region/io/register",
        json!({"key": object.key, "offset": 0, "byte_size": 512}),
    )
    .await;
    assert_eq!(registered.status, 200, "{}", registered.json());
    let status = rest_get(h, "/v2/systemsharedmemory/status").await.json();
    assert_eq!(
        status,
        json!([{"name": "io", "key": object.key, "offset": 0, "byte_size": 512}])
    );
    let one = rest_get(h, "/v2/systemsharedmemory/region/io/status").await;
    assert_eq!(one.status, 200);

    let shm = |size: usize, offset: usize| json!({"shared_memory_region": "io", "shared_memory_byte_size": size, "shared_memory_offset": offset});
    let answer = post_json(
        h,
        "/v2/models/add_sub/infer",
        json!({
            "inputs": [
                {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "parameters": shm(64, 0)},
                {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": vec![1.0; 16]}
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": shm(64, 256)}, {"name": "OUTPUT1"}]
        }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let body = answer.json();
    let out0 = &body["outputs"][0];
    assert_eq!(out0["name"], "OUTPUT0");
    // Written to the region: no data, and (as Triton answers) no
    // parameters, which perf_analyzer would read as binary data.
    assert_eq!(
        out0,
        &json!({"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 16]})
    );
    let sum: Vec<f32> = a.iter().map(|x| x + 1.0).collect();
    assert_eq!(object.read(256, 64), f32_bytes(&sum));
    assert_eq!(body["outputs"][1]["data"][1], 1.0);

    let bad = post_json(
        h,
        "/v2/systemsharedmemory/region/x/register",
        json!({"key": "/../x", "byte_size": 8}),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("/dev/shm"));
    let unregistered = post_json(h, "/v2/systemsharedmemory/region/io/unregister", json!({})).await;
    assert_eq!(unregistered.status, 200);
    assert_eq!(
        rest_get(h, "/v2/systemsharedmemory/region/io/status")
            .await
            .status,
        404
    );
    let cuda = post_json(
        h,
        "/v2/cudasharedmemory/region/g/register",
        json!({"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 8}),
    )
    .await;
    assert_eq!(cuda.status, 501);
    server.stop().await.unwrap();
}
