//! Prometheus metrics after known traffic: exact counters and histogram
//! counts, and agreement with ModelStatistics.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::time::Duration;

use common::{config, get, samples, start, test_models, value};
use oxserve_client::pb;
use tonic::Code;

const FP32: &str = "model=\"identity_fp32\",version=\"1\"";

#[tokio::test]
async fn metrics_count_traffic_exactly_and_agree_with_model_statistics() {
    let mut cfg = config(&test_models());
    cfg.max_batch_size = oxserve::BatchSize::Fixed(4);
    // Long enough that nothing here depends on when requests arrive: a
    // batch runs when it is full, and a lone request waits.
    cfg.max_queue_delay = Duration::from_secs(10);
    let server = start(cfg).await;
    let c = &server.client;

    // Four single rows fill a batch: one execution of 4.
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.infer("identity_fp32")
                    .input("INPUT0", [1, 4], &[i as f32; 4])
                    .send()
                    .await
                    .unwrap();
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    // Four rows in one request fill a batch alone: another execution of 4.
    c.infer("identity_fp32")
        .input("INPUT0", [4, 4], &[1.0f32; 16])
        .send()
        .await
        .unwrap();
    // A lone row with a 1 ms timeout waits for a batch and expires.
    let e = c
        .infer("identity_fp32")
        .input("INPUT0", [1, 4], &[1.0f32; 4])
        .parameter("timeout", 1000i64)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
    // Two invalid requests to another model.
    for _ in 0..2 {
        let e = c
            .infer("add_sub")
            .input("INPUT0", [1, 16], &[0.0f32; 16])
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(Code::InvalidArgument));
    }

    // The timed-out request left the queue when it gave up.
    let (status, body) = get(server.metrics_addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let m = samples(&body);
    assert_eq!(
        value(
            &m,
            &format!("oxserve_requests_total{{{FP32},protocol=\"grpc\",code=\"OK\"}}")
        ),
        5.0
    );
    assert_eq!(
        value(
            &m,
            &format!(
                "oxserve_requests_total{{{FP32},protocol=\"grpc\",code=\"DEADLINE_EXCEEDED\"}}"
            )
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "oxserve_requests_total{model=\"add_sub\",version=\"1\",protocol=\"grpc\",code=\"INVALID_ARGUMENT\"}"
        ),
        2.0
    );
    assert_eq!(
        value(&m, &format!("oxserve_executions_total{{{FP32}}}")),
        2.0
    );
    assert_eq!(
        value(&m, &format!("oxserve_inferences_total{{{FP32}}}")),
        8.0
    );
    assert_eq!(
        value(&m, &format!("oxserve_batch_size_count{{{FP32}}}")),
        2.0
    );
    assert_eq!(value(&m, &format!("oxserve_batch_size_sum{{{FP32}}}")), 8.0);
    assert_eq!(
        value(&m, &format!("oxserve_batch_size_bucket{{{FP32},le=\"2\"}}")),
        0.0
    );
    assert_eq!(
        value(&m, &format!("oxserve_batch_size_bucket{{{FP32},le=\"4\"}}")),
        2.0
    );
    assert_eq!(
        value(
            &m,
            &format!("oxserve_request_duration_seconds_count{{{FP32}}}")
        ),
        6.0
    );
    assert_eq!(
        value(&m, &format!("oxserve_pending_requests{{{FP32}}}")),
        0.0
    );
    assert_eq!(
        value(&m, &format!("oxserve_inflight_requests{{{FP32}}}")),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "oxserve_model_state{model=\"identity_fp32\",version=\"1\",state=\"ready\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "oxserve_model_state{model=\"broken\",version=\"1\",state=\"failed\"}"
        ),
        1.0
    );
    assert!(value(&m, "process_resident_memory_bytes") > 1e6);
    // CPU time to the microsecond, not in whole seconds.
    let cpu = value(&m, "process_cpu_seconds_total");
    assert!(cpu > 0.0 && cpu.fract() != 0.0, "{cpu}");
    assert!(
        body.contains("# HELP oxserve_queue_duration_seconds"),
        "described once with help text"
    );

    // ModelStatistics counts the same events.
    let mut inference = c.inference_client();
    let stats = inference
        .model_statistics(pb::ModelStatisticsRequest {
            name: "identity_fp32".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .model_stats
        .remove(0);
    let s = stats.inference_stats.unwrap();
    assert_eq!(
        s.success.unwrap().count as f64,
        value(
            &m,
            &format!("oxserve_requests_total{{{FP32},protocol=\"grpc\",code=\"OK\"}}")
        )
    );
    assert_eq!(s.fail.unwrap().count, 1);
    assert_eq!(
        stats.execution_count as f64,
        value(&m, &format!("oxserve_executions_total{{{FP32}}}"))
    );
    assert_eq!(
        stats.inference_count as f64,
        value(&m, &format!("oxserve_inferences_total{{{FP32}}}"))
    );
    let queue = s.queue.unwrap();
    assert_eq!(
        queue.count as f64,
        value(
            &m,
            &format!("oxserve_queue_duration_seconds_count{{{FP32}}}")
        )
    );
    let summed = value(&m, &format!("oxserve_queue_duration_seconds_sum{{{FP32}}}"));
    assert!(
        (queue.ns as f64 / 1e9 - summed).abs() < 1e-6,
        "{} ns vs {summed} s",
        queue.ns
    );
    assert_eq!(
        s.compute_infer.unwrap().count as f64,
        value(
            &m,
            &format!("oxserve_compute_infer_duration_seconds_count{{{FP32}}}")
        )
    );

    let (status, _) = get(server.metrics_addr, "/elsewhere").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    server.stop().await.unwrap();
}

/// The metrics port is a port like the others: a client cannot hold more
/// than `max_connections` of it open, nor keep one idle past
/// `connection_idle_timeout` (or silent past 10 s), so idle sockets cannot
/// use up the process's file descriptors.
#[tokio::test]
async fn the_metrics_port_holds_the_connection_limits() {
    use tokio::io::AsyncReadExt;

    let mut cfg = config(&test_models());
    cfg.max_connections = 3;
    cfg.connection_idle_timeout = Duration::from_secs(1);
    let server = start(cfg).await;
    let addr = server.metrics_addr;
    // Three idle connections take every slot; a fourth is closed at once.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), over.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "a connection over the limit is closed at once: {read:?}"
    );
    // Once one closes, a scrape gets in; a scraper that keeps its
    // connection alive is answered, then closed once idle for 1 s.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut kept, request.as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut response)).await;
    assert!(
        read.is_ok(),
        "the idle connection was not closed within 5 s"
    );
    assert!(
        response.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    drop((open, kept));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("oxserve_"), "{body}");
    server.stop().await.unwrap();
}
