//! OpenTelemetry spans exported over OTLP to a small receiver started by
//! the test: the caller's trace id and parent, the four stages, both
//! protocols, and TraceSetting switching traces off and on.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{config, rest, start, test_models};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use oxserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use oxserve_proto::inference::model_infer_request::InferInputTensor;
use oxserve_proto::inference::trace_setting_request::SettingValue;
use oxserve_proto::inference::{ModelInferRequest, TraceSettingRequest};
use serde_json::json;

/// An OTLP/gRPC collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on 127.0.0.1:0; returns its URL and what it keeps.
async fn receiver() -> (String, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (url, receiver)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE_GRPC: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACE_HTTP: &str = "0af7651916cd43dd8448eb211c80319c";
const TRACE_UNSAMPLED: &str = "11111111111111111111111111111111";
const TRACE_OFF: &str = "22222222222222222222222222222222";
const TRACE_ERROR: &str = "33333333333333333333333333333333";
const CALLER: &str = "00f067aa0ba902b7";

fn request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "identity_fp32".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![1, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0u8; 4].into()],
        ..Default::default()
    }
}

async fn call_grpc(
    client: &mut GrpcInferenceServiceClient<tonic::transport::Channel>,
    trace: &str,
    flags: &str,
) {
    let mut request = tonic::Request::new(request());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-{CALLER}-{flags}").parse().unwrap(),
    );
    client.model_infer(request).await.unwrap();
}

async fn trace_level(
    client: &mut GrpcInferenceServiceClient<tonic::transport::Channel>,
    level: &str,
) {
    let settings = HashMap::from([(
        "trace_level".to_string(),
        SettingValue {
            value: vec![level.to_string()],
        },
    )]);
    let answer = client
        .trace_setting(TraceSettingRequest {
            settings,
            model_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.settings["trace_level"].value, [level]);
}

#[tokio::test]
async fn spans_reach_the_collector_as_children_of_the_callers_span() {
    let (url, receiver) = receiver().await;
    let server = start(oxserve::Config {
        otlp_endpoint: Some(url),
        // Only the callers' decisions decide: no request without one is
        // traced.
        trace_sampling_ratio: 0.0,
        ..config(&test_models())
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GrpcInferenceServiceClient::new(channel);

    call_grpc(&mut client, TRACE_GRPC, "01").await;
    call_grpc(&mut client, TRACE_UNSAMPLED, "00").await;
    // A request that fails validation: its span says so, and it has only
    // the stage it reached.
    let mut bad = tonic::Request::new(ModelInferRequest {
        raw_input_contents: vec![vec![0u8; 3].into()],
        ..request()
    });
    bad.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ERROR}-{CALLER}-01").parse().unwrap(),
    );
    let e = client.model_infer(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Without a traceparent, the ratio (0) decides.
    client.model_infer(request()).await.unwrap();
    let traceparent = format!("00-{TRACE_HTTP}-{CALLER}-01");
    let answer = rest(
        server.http_addr,
        "POST",
        "/v2/models/identity_fp32/infer",
        &[("traceparent", &traceparent)],
        serde_json::to_vec(&json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    // Level OFF: nothing is traced, whatever the caller decided.
    trace_level(&mut client, "OFF").await;
    call_grpc(&mut client, TRACE_OFF, "01").await;
    trace_level(&mut client, "TIMESTAMPS").await;

    // Stopping the server sends the spans still buffered.
    server.stop().await.unwrap();
    let spans = receiver.spans.lock().unwrap().clone();
    let traces: std::collections::BTreeSet<String> =
        spans.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(
        traces,
        [TRACE_GRPC, TRACE_HTTP, TRACE_ERROR]
            .iter()
            .map(|t| t.to_string())
            .collect(),
        "only the sampled callers' traces are exported"
    );

    for (trace, protocol) in [(TRACE_GRPC, "grpc"), (TRACE_HTTP, "http")] {
        let of_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace).collect();
        let root = of_trace
            .iter()
            .find(|s| s.name == "infer")
            .expect("a request span");
        assert_eq!(
            hex(&root.parent_span_id),
            CALLER,
            "the caller's span is the parent"
        );
        assert_eq!(root.kind, 2, "SERVER");
        let attribute = |span: &Span, key: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == key)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        assert_eq!(
            attribute(root, "rpc.system"),
            Some(Value::StringValue(protocol.into()))
        );
        assert_eq!(
            attribute(root, "oxserve.model"),
            Some(Value::StringValue("identity_fp32".into()))
        );
        assert_eq!(
            attribute(root, "oxserve.code"),
            Some(Value::StringValue("OK".into()))
        );
        let mut stages: Vec<&str> = of_trace
            .iter()
            .filter(|s| s.name != "infer")
            .map(|s| {
                assert_eq!(
                    s.parent_span_id, root.span_id,
                    "{} is a child of infer",
                    s.name
                );
                assert!(
                    s.start_time_unix_nano >= root.start_time_unix_nano,
                    "{}",
                    s.name
                );
                assert!(
                    s.end_time_unix_nano <= root.end_time_unix_nano,
                    "{}",
                    s.name
                );
                assert!(s.start_time_unix_nano <= s.end_time_unix_nano, "{}", s.name);
                s.name.as_str()
            })
            .collect();
        stages.sort_unstable();
        assert_eq!(stages, ["execute", "queue", "receive", "respond"]);
        let execute = of_trace.iter().find(|s| s.name == "execute").unwrap();
        assert_eq!(
            attribute(execute, "oxserve.batch_size"),
            Some(Value::IntValue(1))
        );
    }

    let failed: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ERROR)
        .collect();
    let mut names: Vec<&str> = failed.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["infer", "receive"]);
    let root = failed.iter().find(|s| s.name == "infer").unwrap();
    let status = root.status.as_ref().unwrap();
    assert_eq!(status.code, 2, "ERROR");
    assert!(
        status.message.contains("Expected 4 bytes, got 3"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn a_collector_that_is_down_costs_spans_not_requests() {
    // Nothing listens on this port: bind one, then let it go.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let server = start(oxserve::Config {
        otlp_endpoint: Some(format!("http://{closed}")),
        ..config(&test_models())
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GrpcInferenceServiceClient::new(channel);
    for _ in 0..3 {
        call_grpc(&mut client, TRACE_GRPC, "01").await;
    }
    // The server still stops (the last spans are given up on, not waited
    // for without end).
    server.stop().await.unwrap();
}
