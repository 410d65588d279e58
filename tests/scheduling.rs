//! The scheduler through the wire: dynamic batching (observed in
//! ModelStatistics), full queues, deadlines and cancelled requests that are
//! never executed, and ModelStreamInfer.

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

/// Keeps the `spin` model's single worker busy for a while (~30 µs per
/// iteration).
fn spin(
    client: &Client,
    iterations: i64,
) -> JoinHandle<oxserve_client::Result<oxserve_client::InferResponse>> {
    spin_call(client, iterations, None)
}

/// A one-iteration `spin` request with a `timeout` parameter.
fn spin_with_timeout_param(
    client: &Client,
    micros: i64,
) -> JoinHandle<oxserve_client::Result<oxserve_client::InferResponse>> {
    spin_call(client, 1, Some(micros))
}

fn spin_call(
    client: &Client,
    iterations: i64,
    timeout_micros: Option<i64>,
) -> JoinHandle<oxserve_client::Result<oxserve_client::InferResponse>> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut call = client.infer("spin").input("ITERATIONS", [1], &[iterations]);
        if let Some(micros) = timeout_micros {
            call = call.parameter("timeout", micros);
        }
        call.send().await
    })
}

/// Starts a long `spin` request and returns once the worker is running it:
/// a probe with a 20 ms `timeout` that expires proves the worker busy.
/// Returns the long request and how many probes ran before it started.
async fn occupy(
    client: &Client,
) -> (
    JoinHandle<oxserve_client::Result<oxserve_client::InferResponse>>,
    u64,
) {
    let mut probes_ran = 0;
    for _ in 0..20 {
        let busy = spin(client, 30_000);
        loop {
            match spin_with_timeout_param(client, 20_000).await.unwrap() {
                Ok(_) => probes_ran += 1,
                Err(e) => {
                    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
                    return (busy, probes_ran);
                }
            }
            if busy.is_finished() {
                // It lost a race for the queue; start another.
                busy.await.unwrap().ok();
                break;
            }
        }
    }
    panic!("the worker was never seen busy");
}

#[tokio::test]
async fn concurrent_requests_run_as_one_batch_and_get_their_own_rows_back() {
    let mut cfg = config(&test_models());
    cfg.max_batch_size = 4;
    cfg.max_queue_delay = Duration::from_secs(2);
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
    // Full at 4 rows: it ran at once, not after the 2 s delay.
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

#[tokio::test]
async fn only_requests_with_the_same_non_batch_shape_batch_together() {
    let mut cfg = config(&test_models());
    cfg.max_batch_size = 8;
    cfg.max_queue_delay = Duration::from_millis(300);
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
    let mut cfg = config(&test_models());
    cfg.max_queue_size = 1;
    let server = start(cfg).await;
    let c = &server.client;
    let (busy, _) = occupy(c).await;
    // The worker is busy: of two requests sent together, one takes the
    // single queue slot (the expired probe no longer counts) and the other
    // is refused at once.
    let pair = [spin(c, 1), spin(c, 1)];
    let mut outcomes = Vec::new();
    for call in pair {
        outcomes.push(call.await.unwrap());
    }
    let refused: Vec<_> = outcomes.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{outcomes:?}");
    let e = refused[0];
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(
        e.message().unwrap().contains("Exceeds maximum queue size"),
        "{e}"
    );
    busy.await.unwrap().unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn requests_past_their_deadline_are_dropped_unexecuted() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    // `occupy` already shows a `timeout` parameter expiring in the queue.
    let (busy, probes_ran) = occupy(c).await;

    // The client's own gRPC deadline (grpc-timeout) works the same way.
    let e = c
        .infer("spin")
        .input("ITERATIONS", [1], &[1i64])
        .timeout(Some(Duration::from_millis(20)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");

    // A client that gives up (drops the call) while queued.
    let abandoned = spin(c, 1);
    abandoned.abort();

    busy.await.unwrap().unwrap();
    // One more request after the queue has drained, to be sure the worker
    // went through everything queued before it.
    spin(c, 1).await.unwrap().unwrap();
    let s = stats(c, "spin").await;
    // The busy request, the early probes and the last one ran; the expired,
    // timed-out and abandoned requests did not.
    assert_eq!(s.execution_count, 2 + probes_ran);
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
        raw_input_contents: vec![value.to_le_bytes().to_vec()],
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
