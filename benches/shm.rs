//! What system shared memory saves for a large tensor: one 8 MiB FP32
//! tensor through `identity_fp32` (tests/models), its bytes in the request
//! and the response, or in a registered `/dev/shm` region, over gRPC and
//! REST (binary tensor extension), one request at a time against a server
//! in this process on 127.0.0.1:0.
//!
//! `cargo bench --bench shm` (about a minute). The identity model does no
//! arithmetic, so what differs between the cases is the transport of the
//! bytes: protobuf or HTTP framing, copies, and the loopback socket.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "benchmark code: a failed unwrap is a failed benchmark"
)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use oxserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use oxserve_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use oxserve_proto::inference::{
    InferParameter, ModelInferRequest, SystemSharedMemoryRegisterRequest,
};
use tonic::transport::Channel;

/// Elements of the tensor: 8 MiB of FP32.
const ELEMENTS: usize = 2 * 1024 * 1024;
const BYTES: usize = ELEMENTS * 4;

/// A running server and its addresses.
struct Server {
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn start(runtime: &tokio::runtime::Runtime) -> Server {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models");
    let config = oxserve::Config {
        model_repository: models,
        grpc_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        metrics: false,
        strict_readiness: false,
        log_level: "warn".into(),
        ..oxserve::Config::default()
    };
    let listeners = runtime.block_on(oxserve::Listeners::bind(&config)).unwrap();
    let grpc = listeners.grpc.local_addr().unwrap();
    let http = listeners.http.as_ref().unwrap().local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(oxserve::run(config, listeners, async move {
        let _ = stopped.await;
    }));
    Server {
        grpc,
        http,
        _stop: stop,
    }
}

/// A /dev/shm object holding the input, then room for the output.
struct Object(String);

impl Object {
    fn new(input: &[u8]) -> Object {
        let key = format!("/oxserve-bench-{}", std::process::id());
        let mut bytes = input.to_vec();
        bytes.resize(2 * BYTES, 0);
        std::fs::write(format!("/dev/shm{key}"), bytes).unwrap();
        Object(key)
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm{}", self.0));
    }
}

fn region(offset: usize) -> HashMap<String, InferParameter> {
    HashMap::from([
        ("shared_memory_region".to_string(), "bench".into()),
        ("shared_memory_byte_size".to_string(), (BYTES as i64).into()),
        ("shared_memory_offset".to_string(), (offset as i64).into()),
    ])
}

fn grpc_request(input: &Bytes, input_in_shm: bool, output_in_shm: bool) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "identity_fp32".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![1, ELEMENTS as i64],
            parameters: if input_in_shm {
                region(0)
            } else {
                HashMap::new()
            },
            contents: None,
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: "OUTPUT0".into(),
            parameters: if output_in_shm {
                region(BYTES)
            } else {
                HashMap::new()
            },
        }],
        raw_input_contents: if input_in_shm {
            vec![]
        } else {
            vec![input.clone()]
        },
        ..Default::default()
    }
}

fn rest_body(input: &Bytes, in_shm: bool) -> (Bytes, usize) {
    let (input_parameters, output_parameters) = if in_shm {
        (
            serde_json::json!({"shared_memory_region": "bench", "shared_memory_byte_size": BYTES, "shared_memory_offset": 0}),
            serde_json::json!({"shared_memory_region": "bench", "shared_memory_byte_size": BYTES, "shared_memory_offset": BYTES}),
        )
    } else {
        (
            serde_json::json!({"binary_data_size": BYTES}),
            serde_json::json!({"binary_data": true}),
        )
    };
    let header = serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "INPUT0", "shape": [1, ELEMENTS], "datatype": "FP32", "parameters": input_parameters}],
        "outputs": [{"name": "OUTPUT0", "parameters": output_parameters}],
    }))
    .unwrap();
    let length = header.len();
    let mut body = header;
    if !in_shm {
        body.extend_from_slice(input);
    }
    (body.into(), length)
}

fn shared_memory(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = start(&runtime);
    let input: Bytes = (0..ELEMENTS)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect::<Vec<u8>>()
        .into();
    let object = Object::new(&input);
    let mut grpc: GrpcInferenceServiceClient<Channel> = runtime.block_on(async {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc)).unwrap();
        // The model loads in the background: retry until it answers.
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    });
    runtime.block_on(async {
        loop {
            let ready = grpc
                .model_ready(oxserve_proto::inference::ModelReadyRequest {
                    name: "identity_fp32".into(),
                    version: String::new(),
                })
                .await;
            if ready.is_ok_and(|r| r.into_inner().ready) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        grpc.system_shared_memory_register(SystemSharedMemoryRegisterRequest {
            name: "bench".into(),
            key: object.0.clone(),
            offset: 0,
            byte_size: 2 * BYTES as u64,
        })
        .await
        .unwrap();
    });
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();

    let mut group = c.benchmark_group("shm/identity_8MiB");
    group.throughput(Throughput::Bytes(BYTES as u64));
    group.sample_size(30);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(8));
    for (name, input_in_shm, output_in_shm) in [
        ("grpc/in_request_out_response", false, false),
        ("grpc/in_shm_out_response", true, false),
        ("grpc/in_request_out_shm", false, true),
        ("grpc/in_shm_out_shm", true, true),
    ] {
        let request = grpc_request(&input, input_in_shm, output_in_shm);
        group.bench_function(name, |b| {
            b.iter(|| {
                let response = runtime
                    .block_on(grpc.model_infer(request.clone()))
                    .unwrap()
                    .into_inner();
                let expected = if output_in_shm { 0 } else { BYTES };
                assert_eq!(response.raw_output_contents[0].len(), expected);
            })
        });
    }
    for (name, in_shm) in [
        ("rest/binary_in_body", false),
        ("rest/in_shm_out_shm", true),
    ] {
        let (body, length) = rest_body(&input, in_shm);
        let url = format!("http://{}/v2/models/identity_fp32/infer", server.http);
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = http::Request::post(&url)
                    .header("inference-header-content-length", length)
                    .body(Full::new(body.clone()))
                    .unwrap();
                let answer = runtime.block_on(async {
                    let response = http.request(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap().to_bytes()
                });
                assert!(answer.len() >= if in_shm { 1 } else { BYTES });
            })
        });
    }
    group.finish();
}

criterion_group!(benches, shared_memory);
criterion_main!(benches);
