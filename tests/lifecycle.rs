//! Health transitions, readiness, graceful drain and its bound, in-process.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::time::{Duration, Instant};

use common::{INFERENCE_SERVICE, config, slow_call, spawn, start, test_models, wait_serving};
use oxserve_client::{Client, ServingStatus};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;

/// Every status a `Watch` on `service` delivers, until the stream ends.
fn watch_all(client: &Client, service: &str) -> JoinHandle<Vec<Wire>> {
    let mut health = client.health_client();
    let service = service.to_string();
    tokio::spawn(async move {
        let mut stream = health
            .watch(HealthCheckRequest { service })
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        while let Some(Ok(status)) = stream.next().await {
            seen.push(status.status());
        }
        seen
    })
}

#[tokio::test]
async fn readiness_turns_on_after_loading_and_off_before_draining() {
    let mut server = spawn(config(&test_models())).await;
    let ready_watch = watch_all(&server.client, INFERENCE_SERVICE);
    let live_watch = watch_all(&server.client, "");
    let unknown_watch = watch_all(&server.client, "no.such.Service");
    // Liveness answers at once, whatever the models are doing.
    assert!(server.client.is_live().await.unwrap());
    assert_eq!(
        server.client.health_check("").await.unwrap(),
        ServingStatus::Serving
    );
    wait_serving(&server.client).await;
    assert!(server.client.is_ready().await.unwrap());
    let e = server
        .client
        .health_check("no.such.Service")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));

    // Requests in flight when shutdown begins: once the first has finished,
    // the others are queued behind it on the server.
    let calls: Vec<_> = (0..3).map(|_| slow_call(&server.client)).collect();
    let mut calls = calls.into_iter();
    calls.next().unwrap().await.unwrap().unwrap();
    server.begin_shutdown();
    for call in calls {
        // Drained, not dropped: each finishes normally.
        call.await.unwrap().unwrap();
    }
    server.join().await.unwrap();

    // Watch streams end at shutdown (or the drain could not finish), after
    // saying NOT_SERVING; readiness never went SERVING before loading.
    let ready = ready_watch.await.unwrap();
    assert_eq!(ready.last(), Some(&Wire::NotServing), "{ready:?}");
    let serving_at = ready
        .iter()
        .position(|s| *s == Wire::Serving)
        .expect("was SERVING");
    assert!(
        ready[..serving_at].iter().all(|s| *s == Wire::NotServing),
        "{ready:?}"
    );
    assert_eq!(
        live_watch.await.unwrap(),
        vec![Wire::Serving, Wire::NotServing]
    );
    assert_eq!(unknown_watch.await.unwrap(), vec![Wire::ServiceUnknown]);
}

#[tokio::test]
async fn strict_readiness_waits_for_every_model() {
    let mut cfg = config(&test_models());
    cfg.strict_readiness = true;
    let server = spawn(cfg).await;
    let c = &server.client;
    // Models load in name order; `versioned` is the last one.
    while !c.model_ready("versioned", Some("3")).await.unwrap() {
        tokio::task::yield_now().await;
    }
    // `broken` failed, so the server is not ready, yet the others serve.
    assert!(!c.is_ready().await.unwrap());
    assert_eq!(
        c.health_check(INFERENCE_SERVICE).await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(c.health_check("").await.unwrap(), ServingStatus::Serving);
    let r = c
        .infer("versioned")
        .input("INPUT0", [1, 1], &[1.0f32])
        .send()
        .await
        .unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().as_f32().unwrap(), vec![4.0]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_drain_is_bounded() {
    let mut cfg = config(&test_models());
    cfg.drain_timeout = Duration::from_millis(200);
    let mut server = start(cfg).await;
    let calls: Vec<_> = (0..6).map(|_| slow_call(&server.client)).collect();
    let mut calls = calls.into_iter();
    calls.next().unwrap().await.unwrap().unwrap();
    // Five requests of ~0.25 s each are left: far more than the bound.
    let started = Instant::now();
    server.begin_shutdown();
    server.join().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "drain took {took:?} with a 200 ms bound"
    );
    for call in calls {
        // Cut off at the bound: the client hears about it instead of hanging.
        if let Err(e) = call.await.unwrap() {
            assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
        }
    }
}

#[tokio::test]
async fn server_metadata_names_the_server() {
    let server = start(config(&test_models())).await;
    let meta = server.client.server_metadata().await.unwrap();
    assert_eq!(meta.name, "oxserve");
    assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));
    let meta = server.client.model_metadata("add_sub", None).await.unwrap();
    assert_eq!(meta.platform, "onnxruntime_onnx");
    assert_eq!(meta.versions, vec!["1"]);
    let inputs: Vec<(&str, &str, &[i64])> = meta
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str(), &t.shape[..]))
        .collect();
    assert_eq!(
        inputs,
        [
            ("INPUT0", "FP32", &[-1i64, 16][..]),
            ("INPUT1", "FP32", &[-1, 16][..])
        ]
    );
    let meta = server
        .client
        .model_metadata("identity_bytes", Some("1"))
        .await
        .unwrap();
    assert_eq!(meta.outputs[0].datatype, "BYTES");
    assert_eq!(meta.outputs[0].shape, vec![-1, -1]);
    server.stop().await.unwrap();
}
