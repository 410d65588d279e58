//! Deadlines and cancellation through a plain gRPC client: tonic's codec
//! over a bare hyper HTTP/2 client, with no timer of its own and no SDK
//! rewriting codes. Whatever the client sees is what the server answered.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::time::Duration;

use common::{config, start, test_models};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use oxserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use oxserve_proto::inference::model_infer_request::InferInputTensor;
use oxserve_proto::inference::{ModelInferRequest, ModelStatistics, ModelStatisticsRequest};
use tonic::Code;

type Plain = GrpcInferenceServiceClient<HttpClient<HttpConnector, tonic::body::Body>>;

fn plain_client(server: &common::TestServer) -> Plain {
    let http = HttpClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{}", server.addr).parse().unwrap();
    GrpcInferenceServiceClient::with_origin(http, origin).max_decoding_message_size(64 << 20)
}

/// A 2048×2048 FP32 matrix for the `slow` model (about 0.25 s on one core).
fn slow_request() -> ModelInferRequest {
    let n = 2048i64;
    let bytes: Vec<u8> = std::iter::repeat_n(1e-3f32.to_le_bytes(), (n * n) as usize)
        .flatten()
        .collect();
    ModelInferRequest {
        model_name: "slow".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![n, n],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes.into()],
        ..Default::default()
    }
}

async fn stats(client: &mut Plain, model: &str) -> ModelStatistics {
    client
        .model_statistics(ModelStatisticsRequest {
            name: model.into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .model_stats
        .remove(0)
}

fn fails(s: &ModelStatistics) -> u64 {
    s.inference_stats.unwrap().fail.unwrap().count
}

const SLOW: &str = "model=\"slow\",version=\"1\"";

#[tokio::test]
async fn the_server_answers_deadline_exceeded_and_counts_it_once() {
    let server = start(config(&test_models())).await;
    let mut client = plain_client(&server);
    let before = fails(&stats(&mut client, "slow").await);

    let mut request = tonic::Request::new(slow_request());
    request.set_timeout(Duration::from_millis(10));
    let status = client.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("deadline passed"),
        "{}",
        status.message()
    );

    assert_eq!(fails(&stats(&mut client, "slow").await), before + 1);
    let m = server.metrics().await;
    assert_eq!(
        m[&format!(
            "oxserve_requests_total{{{SLOW},protocol=\"grpc\",code=\"DEADLINE_EXCEEDED\"}}"
        )],
        1.0
    );
    assert_eq!(m[&format!("oxserve_inflight_requests{{{SLOW}}}")], 0.0);
    server.stop().await.unwrap();
}

const FP32: &str = "model=\"identity_fp32\",version=\"1\"";

#[tokio::test]
async fn a_dropped_call_is_counted_as_cancelled_and_never_executed() {
    // `identity_fp32` waits 10 s for a batch of 4 rows to fill, so a lone
    // row stays queued until the test acts: no timing involved.
    let mut cfg = config(&test_models());
    cfg.max_batch_size = oxserve::BatchSize::Fixed(4);
    cfg.max_queue_delay = Duration::from_secs(10);
    let server = start(cfg).await;
    let mut client = plain_client(&server);

    let mut queued_client = client.clone();
    let queued = tokio::spawn(async move {
        queued_client
            .model_infer(ModelInferRequest {
                model_name: "identity_fp32".into(),
                inputs: vec![InferInputTensor {
                    name: "INPUT0".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 4],
                    ..Default::default()
                }],
                raw_input_contents: vec![vec![0u8; 16].into()],
                ..Default::default()
            })
            .await
    });
    server
        .wait_for_metric(&format!("oxserve_pending_requests{{{FP32}}}"), 1.0)
        .await;

    // The client gives up: its HTTP/2 stream is reset.
    queued.abort();
    server
        .wait_for_metric(
            &format!("oxserve_requests_total{{{FP32},protocol=\"grpc\",code=\"CANCELLED\"}}"),
            1.0,
        )
        .await;
    let m = server.metrics().await;
    assert_eq!(m[&format!("oxserve_pending_requests{{{FP32}}}")], 0.0);
    assert_eq!(m[&format!("oxserve_inflight_requests{{{FP32}}}")], 0.0);

    let s = stats(&mut client, "identity_fp32").await;
    assert_eq!(s.execution_count, 0, "the cancelled request never ran");
    assert_eq!(fails(&s), 1, "counted once, as a failure");
    server.stop().await.unwrap();
}
