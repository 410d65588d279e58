//! The SDK over several real servers: requests balanced across two of them
//! (both answer), failing over when one stops, and retries with backoff
//! that carry a call across a server going away and coming back on the
//! same address.
//!
//! The two servers serve the same model under different version numbers,
//! so each response says which server answered it.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{config, spawn, start, test_models, wait_serving};
use oxserve_client::{Client, InferResponse, RetryPolicy};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tonic::Code;

/// A repository with `identity_fp32` as version `version` only.
fn repository_with_version(version: u32) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("identity_fp32").join(version.to_string());
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(
        test_models().join("identity_fp32/1/model.onnx"),
        target.join("model.onnx"),
    )
    .unwrap();
    dir
}

async fn identity(client: &Client) -> oxserve_client::Result<InferResponse> {
    client
        .infer("identity_fp32")
        .input("INPUT0", [1, 2], &[1.0f32, 2.0])
        .send()
        .await
}

/// How many of `responses` each server (model version) answered.
fn by_server(responses: &[InferResponse]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in responses {
        *counts.entry(r.model_version().to_owned()).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn requests_are_balanced_across_two_servers() {
    let (repo_a, repo_b) = (repository_with_version(1), repository_with_version(2));
    let a = start(config(repo_a.path())).await;
    let b = start(config(repo_b.path())).await;
    let client = Client::balanced([format!("http://{}", a.addr), format!("http://{}", b.addr)])
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();

    // One after another: strictly in turn.
    let mut responses = Vec::new();
    for _ in 0..10 {
        responses.push(identity(&client).await.unwrap());
    }
    assert_eq!(by_server(&responses), counts(&[("1", 5), ("2", 5)]));
    // Each server's own statistics agree.
    for server in [&a, &b] {
        let stats = server
            .client
            .model_statistics(Some("identity_fp32"), None)
            .await
            .unwrap();
        assert_eq!(stats[0].inference_count, 5, "{stats:?}");
    }

    // Concurrently, from clones in tasks: still spread over both.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { identity(&client).await })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap().unwrap());
    }
    assert_eq!(by_server(&responses), counts(&[("1", 10), ("2", 10)]));

    // A stops: every request still succeeds, on B.
    a.stop().await.unwrap();
    let mut responses = Vec::new();
    for _ in 0..6 {
        responses.push(identity(&client).await.unwrap());
    }
    assert_eq!(by_server(&responses), counts(&[("2", 6)]));
    b.stop().await.unwrap();
}

/// Starts a server for `repository` on exactly `addr`.
async fn start_on(repository: &Path, addr: SocketAddr) -> common::TestServer {
    let mut config = config(repository);
    config.grpc_address = addr;
    let server = spawn(config).await;
    wait_serving(&server.client).await;
    server
}

#[tokio::test]
async fn a_call_is_retried_until_the_server_comes_back() {
    let repository = repository_with_version(1);
    let first = start(config(repository.path())).await;
    let addr = first.addr;
    let (retries, mut retried) = mpsc::unbounded_channel();
    let policy = RetryPolicy::default()
        .max_attempts(1_000)
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .on_retry(move |event| {
            let _ = retries.send((event.attempt, event.error.code()));
        });
    let client = Client::builder(format!("http://{addr}"))
        .timeout(Duration::from_secs(30))
        .retry(policy)
        .connect()
        .await
        .unwrap();
    assert_eq!(identity(&client).await.unwrap().model_version(), "1");

    first.stop().await.unwrap();
    // Without retries the outage shows as UNAVAILABLE.
    let once = client.clone().with_retry(RetryPolicy::never());
    let err = identity(&once).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");

    // With them, a call started while the server is away keeps trying...
    let call = tokio::spawn({
        let client = client.clone();
        async move { identity(&client).await }
    });
    let (attempt, code) = retried.recv().await.expect("the call retries");
    assert_eq!((attempt, code), (1, Some(Code::Unavailable)));
    assert!(!call.is_finished());

    // ...and succeeds once a server is back on the same address (while it
    // loads, the model's UNAVAILABLE is retried too).
    let second = start_on(repository.path(), addr).await;
    let response = call.await.unwrap().expect("the retried call succeeds");
    assert_eq!(response.model_version(), "1");
    assert_eq!(
        response.try_output("OUTPUT0").unwrap().as_f32().unwrap(),
        [1.0, 2.0]
    );
    while let Ok((_, code)) = retried.try_recv() {
        assert_eq!(code, Some(Code::Unavailable));
    }
    second.stop().await.unwrap();
}
