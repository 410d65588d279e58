//! The SDK's helpers for Triton's extensions against a real in-process
//! oxserve: `ModelConfig`, `ModelStatistics` and `ModelStreamInfer`.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use common::{config, start, test_models};
use oxserve_client::{Error, InferResponse};
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn model_config_describes_the_model() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let config = c.model_config("add_sub", None).await.unwrap();
    assert_eq!(config.name, "add_sub");
    let inputs: Vec<(&str, &[i64])> = config
        .input
        .iter()
        .map(|t| (t.name.as_str(), &t.dims[..]))
        .collect();
    assert_eq!(inputs, [("INPUT0", &[16i64][..]), ("INPUT1", &[16][..])]);
    let outputs: Vec<&str> = config.output.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(outputs, ["OUTPUT0", "OUTPUT1"]);
    // `slow` opts out of batching in its config.pbtxt.
    let slow = c.model_config("slow", Some("1")).await.unwrap();
    assert_eq!(slow.max_batch_size, Some(0));

    let err = c.model_config("no_such_model", None).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn model_statistics_count_what_was_served() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    for _ in 0..3 {
        c.infer("identity_fp32")
            .input("INPUT0", [1, 2], &[1.0f32, 2.0])
            .send()
            .await
            .unwrap();
    }
    let failed = c
        .infer("identity_fp32")
        .input("INPUT0", [1, 2], &[1.0f64, 2.0])
        .send()
        .await;
    assert_eq!(failed.unwrap_err().code(), Some(Code::InvalidArgument));

    let stats = c
        .model_statistics(Some("identity_fp32"), None)
        .await
        .unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    let s = &stats[0];
    assert_eq!(
        (s.name.as_str(), s.version.as_str()),
        ("identity_fp32", "1")
    );
    assert_eq!(s.inference_count, 3);
    let infer = s.inference_stats.as_ref().expect("inference stats");
    assert_eq!(infer.success.as_ref().map(|d| d.count), Some(3));
    assert!(s.last_inference > 0);

    let all = c.model_statistics(None, None).await.unwrap();
    assert!(all.iter().any(|s| s.name == "add_sub"), "{all:?}");
    let err = c
        .model_statistics(Some("no_such_model"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn streamed_requests_are_answered_in_order_with_their_ids() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let (requests, mut answers) = c.stream_infer().unwrap();
    for i in 0..5 {
        let model = if i == 2 {
            "no_such_model"
        } else {
            "identity_int32"
        };
        let request = c
            .infer(model)
            .id(format!("req-{i}"))
            .input("INPUT0", [1, 1], &[i]);
        requests.send(request).await.unwrap();
    }
    // A mistake in a request is caught before it reaches the stream.
    let wrong = c.infer("identity_int32").input("INPUT0", [1, 2], &[1i32]);
    assert!(matches!(
        requests.send(wrong).await,
        Err(Error::Mismatch(_))
    ));
    drop(requests);

    let mut seen = Vec::new();
    while let Some(answer) = answers.next().await {
        seen.push(answer);
    }
    assert_eq!(seen.len(), 5);
    for (i, answer) in seen.into_iter().enumerate() {
        let id = format!("req-{i}");
        match answer {
            Ok(response) => {
                assert_eq!(response.id(), id);
                let value = response.try_output("OUTPUT0").unwrap().as_i32().unwrap();
                assert_eq!(value, [i as i32]);
            }
            Err(Error::Stream {
                id: failed,
                message,
            }) => {
                assert_eq!((i, failed.as_str()), (2, id.as_str()));
                assert!(message.contains("no_such_model"), "{message}");
            }
            Err(other) => panic!("request {i}: {other}"),
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_stream_works_as_a_tokio_stream_from_several_senders() {
    let server = start(config(&test_models())).await;
    let c = server.client.clone();
    let (requests, answers) = c.stream_infer().unwrap();
    let senders: Vec<_> = (0..4i64)
        .map(|task| {
            let requests = requests.clone();
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    let value = task * 10 + i;
                    let request = c.infer("identity_int64").id(value.to_string()).input(
                        "INPUT0",
                        [1, 1],
                        &[value],
                    );
                    requests.send(request).await.unwrap();
                }
            })
        })
        .collect();
    drop(requests);
    for sender in senders {
        sender.await.unwrap();
    }
    let responses: Vec<InferResponse> = answers.map(|a| a.unwrap()).collect().await;
    assert_eq!(responses.len(), 20);
    for r in &responses {
        let value = r.try_output("OUTPUT0").unwrap().as_i64().unwrap();
        assert_eq!(value, [r.id().parse::<i64>().unwrap()]);
    }
    server.stop().await.unwrap();
}
