//! The scheduler through the wire: dynamic batching (observed in
//! ModelStatistics), full queues, deadlines and cancelled requests that are
//! never executed, and ModelStreamInfer.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::time::Duration;

use common::{config, start, test_models};
use oxserve_client::{Client, pb};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;

/// Statistics of one model's only loaded version.
async fn stats(client: &Client, model: &str) -> pb::ModelStatistics {
    let mut inference = client.inference_client();
    let response = inference
        .model_statistics(pb::ModelStatisticsRequest {
            name: model.into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.model_stats.len(), 1);
    response.model_stats.into_iter().next().unwrap()
}

const FP32: &str = "model=\"identity_fp32\",version=\"1\"";

/// A one-row `identity_fp32` request, sent from a task of its own.
fn one_row(
    client: &Client,
    timeout_param: Option<i64>,
) -> JoinHandle<oxserve_client::Result<oxserve_client::InferResponse>> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut call = client
            .infer("identity_fp32")
            .input("INPUT0", [1, 4], &[1.0f32; 4]);
        if let Some(micros) = timeout_param {
            call = call.parameter("timeout", micros);
        }
        call.send().await
    })
}

/// A server whose `identity_fp32` batches up to 4 rows and waits 10 s for
/// a batch to fill: a lone one-row request stays queued, deterministically,
/// until the test fills the batch, cancels it or its deadline passes.
async fn start_batching(max_queue_size: usize) -> common::TestServer {
    let mut cfg = config(&test_models());
    cfg.max_batch_size = oxserve::BatchSize::Fixed(4);
    cfg.max_queue_delay = Duration::from_secs(10);
    cfg.max_queue_size = max_queue_size;
    start(cfg).await
}

#[tokio::test]
async fn concurrent_requests_run_as_one_batch_and_get_their_own_rows_back() {
    let mut cfg = config(&test_models());
    cfg.max_batch_size = oxserve::BatchSize::Fixed(4);
    // Long enough that the test never depends on when the two arrive.
    cfg.max_queue_delay = Duration::from_secs(10);
    let server = start(cfg).await;
    // A request carrying 3 rows and one carrying 1 fill a batch of 4.
    let calls: Vec<_> = [(3usize, 10.0f32), (1, 20.0)]
        .into_iter()
        .map(|(rows, base)| {
            let client = server.client.clone();
            tokio::spawn(async move {
                let data: Vec<f32> = (0..rows * 4).map(|i| base + i as f32).collect();
                let r = client
                    .infer("identity_fp32")
                    .input("INPUT0", [rows as i64, 4], &data)
                    .send()
                    .await
                    .unwrap();
                let out = r.output("OUTPUT0").unwrap();
                assert_eq!(out.shape(), &[rows as i64, 4]);
                assert_eq!(
                    out.as_f32().unwrap(),
                    data,
                    "each request gets its own rows back"
                );
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let s = stats(&server.client, "identity_fp32").await;
    // Full at 4 rows: it ran at once, not after the 10 s delay.
    assert_eq!(s.execution_count, 1);
    assert_eq!(s.inference_count, 4);
    let batch: Vec<(u64, u64)> = s
        .batch_stats
        .iter()
        .map(|b| (b.batch_size, b.compute_infer.unwrap().count))
        .collect();
    assert_eq!(batch, vec![(4, 1)]);
    let inference = s.inference_stats.unwrap();
    assert_eq!(inference.success.unwrap().count, 2);
    assert_eq!(inference.queue.unwrap().count, 2);
    assert_eq!(
        inference.compute_infer.unwrap().count,
        2,
        "one per request, as Triton counts"
    );
    server.stop().await.unwrap();
}

/// One request's data fails the execution of its whole batch (an index out
/// of the table's range); the server runs each request of that batch
/// again alone, so only the one that sent it is refused, with the model's
/// own explanation, and the others get their answers.
#[tokio::test]
async fn a_request_the_model_rejects_fails_alone_not_its_batch() {
    let repository = tempfile::tempdir().unwrap();
    let model = repository.path().join("gather/1");
    std::fs::create_dir_all(&model).unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gather/1/model.onnx");
    std::fs::copy(fixture, model.join("model.onnx")).unwrap();
    let mut cfg = config(repository.path());
    // The four requests fill one batch, whenever they arrive.
    cfg.max_batch_size = oxserve::BatchSize::Fixed(4);
    cfg.max_queue_delay = Duration::from_secs(10);
    let server = start(cfg).await;
    // TABLE is [10, 20, 30, 40]: index 9 is out of its range.
    let calls: Vec<_> = [0_i64, 9, 2, 3]
        .into_iter()
        .map(|index| {
            let client = server.client.clone();
            tokio::spawn(async move {
                let answer = client
                    .infer("gather")
                    .input("INDEX", [1, 1], &[index])
                    .send()
                    .await;
                (index, answer)
            })
        })
        .collect();
    for call in calls {
        match call.await.unwrap() {
            (9, answer) => {
                let error = answer.unwrap_err();
                assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
                let message = error.message().unwrap();
                assert!(
                    message.contains("'gather'")
                        && message.contains("rejected the input")
                        && message.contains("idx=9"),
                    "{message}"
                );
            }
            (index, answer) => {
                let out = answer.unwrap().output("OUTPUT0").unwrap().to_vec::<f32>();
                assert_eq!(out.unwrap(), [10.0 * (index + 1) as f32], "index {index}");
            }
        }
    }
    // The batch of four failed and is not counted; the three good requests
    // then ran alone.
    let s = stats(&server.client, "gather").await;
    let batch: Vec<(u64, u64)> = s
        .batch_stats
        .iter()
        .map(|b| (b.batch_size, b.compute_infer.unwrap().count))
        .collect();
    assert_eq!(batch, vec![(1, 3)]);
    let inference = s.inference_stats.unwrap();
    assert_eq!(inference.success.unwrap().count, 3);
    assert_eq!(inference.fail.unwrap().count, 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn only_requests_with_the_same_non_batch_shape_batch_together() {
    let mut cfg = config(&test_models());
    // Two rows fill a batch, and a lone row would wait 10 s: each pair of
    // the same width runs as soon as it is complete, whenever that is.
    cfg.max_batch_size = oxserve::BatchSize::Fixed(2);
    cfg.max_queue_delay = Duration::from_secs(10);
    let server = start(cfg).await;
    let calls: Vec<_> = [4i64, 8, 4, 8]
        .into_iter()
        .map(|width| {
            let client = server.client.clone();
            tokio::spawn(async move {
                let data = vec![1.0f32; width as usize];
                client
                    .infer("identity_fp32")
                    .input("INPUT0", [1, width], &data)
                    .send()
                    .await
                    .unwrap();
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let s = stats(&server.client, "identity_fp32").await;
    assert_eq!(s.execution_count, 2, "one batch per shape");
    assert_eq!(s.inference_count, 4);
    let batch: Vec<(u64, u64)> = s
        .batch_stats
        .iter()
        .map(|b| (b.batch_size, b.compute_infer.unwrap().count))
        .collect();
    assert_eq!(batch, vec![(2, 2)]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_answers_unavailable_at_once() {
    let server = start_batching(1).await;
    let c = &server.client;
    // One row waits for its batch and takes the single queue slot.
    let waiting = one_row(c, None);
    server
        .wait_for_metric(&format!("oxserve_pending_requests{{{FP32}}}"), 1.0)
        .await;
    let e = one_row(c, None).await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(
        e.message().unwrap().contains("Exceeds maximum queue size"),
        "{e}"
    );
    // A caller that gives up frees its slot at once.
    waiting.abort();
    server
        .wait_for_metric(&format!("oxserve_pending_requests{{{FP32}}}"), 0.0)
        .await;
    let full = c
        .infer("identity_fp32")
        .input("INPUT0", [4, 4], &[1.0f32; 16])
        .send()
        .await
        .unwrap();
    assert_eq!(full.output("OUTPUT0").unwrap().shape(), &[4, 4]);
    let s = stats(c, "identity_fp32").await;
    assert_eq!(s.execution_count, 1, "only the full batch ran");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn requests_past_their_deadline_or_abandoned_are_dropped_unexecuted() {
    let server = start_batching(16).await;
    let c = &server.client;
    // The `timeout` parameter expires while the row waits for its batch.
    let e = one_row(c, Some(20_000)).await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
    // The client's own gRPC deadline (grpc-timeout) works the same way.
    let e = c
        .infer("identity_fp32")
        .input("INPUT0", [1, 4], &[1.0f32; 4])
        .timeout(Some(Duration::from_millis(20)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
    // A client that gives up (drops the call) while queued.
    let abandoned = one_row(c, None);
    server
        .wait_for_metric(&format!("oxserve_pending_requests{{{FP32}}}"), 1.0)
        .await;
    abandoned.abort();
    server
        .wait_for_metric(
            &format!("oxserve_requests_total{{{FP32},protocol=\"grpc\",code=\"CANCELLED\"}}"),
            1.0,
        )
        .await;
    assert_eq!(
        server.metrics().await[&format!("oxserve_pending_requests{{{FP32}}}")],
        0.0
    );
    // A full batch runs; nothing before it did.
    c.infer("identity_fp32")
        .input("INPUT0", [4, 4], &[1.0f32; 16])
        .send()
        .await
        .unwrap();
    let s = stats(c, "identity_fp32").await;
    assert_eq!(s.execution_count, 1);
    assert_eq!(s.inference_count, 4);
    let inference = s.inference_stats.unwrap();
    assert_eq!(inference.success.unwrap().count, 1);
    assert_eq!(
        inference.fail.unwrap().count,
        3,
        "two deadlines, one cancel"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_answers_every_request_in_order_errors_included() {
    let server = start(config(&test_models())).await;
    let request = |id: &str, model: &str, value: f32| pb::ModelInferRequest {
        model_name: model.into(),
        id: id.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![1, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![value.to_le_bytes().to_vec().into()],
        ..Default::default()
    };
    let requests = vec![
        request("a", "versioned", 1.0),
        request("b", "no-such-model", 2.0),
        request("c", "versioned", 3.0),
    ];
    let mut inference = server.client.inference_client();
    let mut answers = inference
        .model_stream_infer(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(answer) = answers.next().await {
        let answer = answer.unwrap();
        let response = answer.infer_response.unwrap();
        seen.push((response.id.clone(), answer.error_message.is_empty()));
        if answer.error_message.is_empty() {
            let value =
                f32::from_le_bytes(response.raw_output_contents[0][..4].try_into().unwrap());
            let expected = if response.id == "a" { 4.0 } else { 6.0 };
            assert_eq!(value, expected);
        } else {
            assert!(
                answer.error_message.contains("no-such-model"),
                "{}",
                answer.error_message
            );
        }
    }
    assert_eq!(
        seen,
        [("a".into(), true), ("b".into(), false), ("c".into(), true)]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn statistics_count_successes_and_failures() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    for _ in 0..3 {
        c.infer("add_sub")
            .input("INPUT0", [1, 16], &[0.0f32; 16])
            .input("INPUT1", [1, 16], &[0.0f32; 16])
            .send()
            .await
            .unwrap();
    }
    c.infer("add_sub")
        .input("INPUT0", [1, 16], &[0.0f32; 16])
        .send()
        .await
        .unwrap_err();
    let s = stats(c, "add_sub").await;
    let inference = s.inference_stats.unwrap();
    assert_eq!(inference.success.unwrap().count, 3);
    assert_eq!(inference.fail.unwrap().count, 1);
    assert_eq!(s.inference_count, 3);
    assert!(s.last_inference > 0);

    let mut inference = c.inference_client();
    let all = inference
        .model_statistics(pb::ModelStatisticsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.model_stats.len() > 10, "every loaded version");
    let e = inference
        .model_statistics(pb::ModelStatisticsRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    server.stop().await.unwrap();
}
