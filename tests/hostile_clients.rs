//! Clients that try to make the server hold too much: thousands of streams
//! on one connection, requests whose body never comes, responses never
//! read, connections until refused. Each runs beside a well-behaved client
//! on its own connection; the server's resident memory and that client's
//! latency are measured, printed (`--nocapture`) and bounded.
//!
//! The server runs in this process, so its resident memory is this
//! process's (`/proc/self/statm`).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oxserve::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The tests of this file one at a time: each measures the process's
/// memory and a client's latency, which the others' servers would blur.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Growth of resident memory a hostile client may cause.
const RSS_BOUND: u64 = 96 * 1024 * 1024;
/// Slowest answer the well-behaved client may see while the attack runs
/// (a shared 2-core machine: its normal p99 is a few milliseconds).
const LATENCY_BOUND: Duration = Duration::from_millis(500);

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// HTTP/2 frames, written by hand: a hostile client does not follow the
/// rules a client library enforces (the h2 crate would queue streams over
/// the server's limit instead of sending them).
mod frames {
    pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub(crate) const HEADERS: u8 = 0x1;
    pub(crate) const DATA: u8 = 0x0;
    pub(crate) const RST_STREAM: u8 = 0x3;
    pub(crate) const SETTINGS: u8 = 0x4;
    pub(crate) const GOAWAY: u8 = 0x7;
    pub(crate) const WINDOW_UPDATE: u8 = 0x8;
    pub(crate) const END_STREAM: u8 = 0x1;
    pub(crate) const END_HEADERS: u8 = 0x4;

    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }

    /// A gRPC request's headers (HPACK without the dynamic table).
    pub(crate) fn grpc_headers(stream: u32, path: &str, end_stream: bool) -> Vec<u8> {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        block.push(0x04); // :path, literal
        string(&mut block, path);
        block.push(0x01); // :authority, literal
        string(&mut block, "localhost");
        for (name, value) in [("content-type", "application/grpc"), ("te", "trailers")] {
            block.push(0x00);
            string(&mut block, name);
            string(&mut block, value);
        }
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &block)
    }
}

/// What the server sent a raw connection, by frame type.
#[derive(Debug, Default)]
struct Seen {
    refused_streams: AtomicUsize,
    goaway: AtomicBool,
    closed: AtomicBool,
}

/// Reads frames until the connection ends, counting what matters.
async fn read_frames(mut reader: tokio::net::tcp::OwnedReadHalf, seen: Arc<Seen>) {
    let mut header = [0u8; 9];
    loop {
        if reader.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).await.is_err() {
            break;
        }
        match header[3] {
            frames::RST_STREAM => {
                seen.refused_streams.fetch_add(1, Ordering::Relaxed);
            }
            frames::GOAWAY => seen.goaway.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
    seen.closed.store(true, Ordering::Relaxed);
}

/// A server with limits small enough to reach in a test.
async fn server() -> (common::TestServer, Config) {
    let config = Config {
        http2_max_concurrent_streams: 100,
        http2_keepalive_interval: Duration::from_millis(500),
        http2_keepalive_timeout: Duration::from_millis(500),
        max_connections: 64,
        connection_idle_timeout: Duration::from_secs(2),
        ..common::config(&common::test_models())
    };
    let server = common::start(config.clone()).await;
    (server, config)
}

/// The well-behaved client: one inference every 5 ms on its own
/// connection until `stop`; every latency.
fn polite(
    client: oxserve_client::Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            client
                .infer("identity_fp32")
                .input("INPUT0", [1, 4], &[1.0f32, 2.0, 3.0, 4.0])
                .send()
                .await
                .expect("the well-behaved client is served throughout");
            latencies.push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `attack` beside the well-behaved client; asserts and prints the
/// bounds.
async fn measure<F, Fut>(name: &str, client: &oxserve_client::Client, attack: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Baseline: the same client alone.
    let stop = Arc::new(AtomicBool::new(false));
    let alone = polite(client.clone(), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut baseline = alone.await.unwrap();
    baseline.sort();

    let before = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let beside = polite(client.clone(), Arc::clone(&stop));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    attack().await;
    stop.store(true, Ordering::Relaxed);
    let mut during = beside.await.unwrap();
    sampler.abort();
    during.sort();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    println!(
        "{name}: RSS {} MiB -> peak +{:.1} MiB; well-behaved client alone p50 {:?} p99 {:?}; \
         during p50 {:?} p99 {:?} max {:?} ({} requests)",
        before / (1 << 20),
        growth as f64 / (1 << 20) as f64,
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.99),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.last().unwrap(),
        during.len(),
    );
    assert!(
        growth < RSS_BOUND,
        "{name}: resident memory grew by {growth} bytes"
    );
    assert!(
        percentile(&during, 0.99) < LATENCY_BOUND,
        "{name}: the well-behaved client's p99 was {:?}",
        percentile(&during, 0.99)
    );
}

async fn raw(addr: SocketAddr) -> (tokio::net::tcp::OwnedWriteHalf, Arc<Seen>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    writer.write_all(frames::PREFACE).await.unwrap();
    writer
        .write_all(&frames::frame(frames::SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    let seen = Arc::new(Seen::default());
    tokio::spawn(read_frames(reader, Arc::clone(&seen)));
    (writer, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_streams_whose_bodies_never_come() {
    let _serial = SERIAL.lock().await;
    let (server, config) = server().await;
    let addr = server.addr;
    measure(
        "5000 streams, headers only",
        &server.client,
        || async move {
            let (mut writer, seen) = raw(addr).await;
            let mut opened = 0u32;
            for i in 0..5000u32 {
                let headers = frames::grpc_headers(
                    2 * i + 1,
                    "/inference.GRPCInferenceService/ModelInfer",
                    false,
                );
                if writer.write_all(&headers).await.is_err() {
                    break;
                }
                opened += 1;
            }
            // Streams over the limit are refused (or the connection is ended
            // for refusing too many); the rest wait for bodies that never
            // come until the connection is closed for being idle-but-busy by
            // nothing: they are in flight, so only the client's going ends them.
            let start = Instant::now();
            let limit = config.http2_max_concurrent_streams as usize;
            while seen.refused_streams.load(Ordering::Relaxed) + limit < opened as usize
                && !seen.closed.load(Ordering::Relaxed)
            {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "the server refused nothing"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!(
                "opened {opened} streams; refused {}; GOAWAY {}; closed {}",
                seen.refused_streams.load(Ordering::Relaxed),
                seen.goaway.load(Ordering::Relaxed),
                seen.closed.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
    )
    .await;
    server.stop().await.unwrap();
}

/// A gRPC message: a ModelInfer request for `identity_fp32` with `floats`
/// values (its answer is as large).
fn infer_message(floats: usize) -> Vec<u8> {
    use oxserve_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
    use prost::Message;
    let request = ModelInferRequest {
        model_name: "identity_fp32".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![1, floats as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0u8; floats * 4].into()],
        ..Default::default()
    };
    let body = request.encode_to_vec();
    let mut message = vec![0u8];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_never_read_end_in_a_keepalive_timeout() {
    let _serial = SERIAL.lock().await;
    let (server, _) = server().await;
    let addr = server.addr;
    measure("responses never read", &server.client, || async move {
        // Inferences whose answers are never read, nor the server's PINGs.
        // The client opens its receive windows wide, so the server may send
        // everything at once; the requests stay within the server's initial
        // 64 KiB connection window (a raw client cannot see its updates
        // without reading).
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        writer.write_all(frames::PREFACE).await.unwrap();
        let mut settings = vec![0, 4];
        settings.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
        writer
            .write_all(&frames::frame(frames::SETTINGS, 0, 0, &settings))
            .await
            .unwrap();
        let increment = (0x7fff_ffffu32 - 65_535).to_be_bytes();
        writer
            .write_all(&frames::frame(frames::WINDOW_UPDATE, 0, 0, &increment))
            .await
            .unwrap();
        let message = infer_message(2048);
        let requests = 7u32;
        let start = Instant::now();
        for i in 0..requests {
            let id = 2 * i + 1;
            let mut frames =
                frames::grpc_headers(id, "/inference.GRPCInferenceService/ModelInfer", false);
            frames.extend(frames::frame(
                frames::DATA,
                frames::END_STREAM,
                id,
                &message,
            ));
            writer.write_all(&frames).await.unwrap();
        }
        // Not reading for two keep-alive periods, then reading to see
        // that the server has closed the connection.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut sink = vec![0u8; 1 << 16];
        let mut received = 0usize;
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match reader.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received += n,
                }
            }
        })
        .await;
        println!(
            "{requests} inferences of 8 KiB, answers unread: {received} bytes were waiting; \
             connection closed within {:?}",
            start.elapsed()
        );
        assert!(
            closed.is_ok(),
            "the server kept a connection that reads nothing"
        );
        assert!(
            received > (requests as usize) * 8192,
            "the answers were sent: {received} bytes"
        );
    })
    .await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let _serial = SERIAL.lock().await;
    let config = Config {
        http2_keepalive_interval: Duration::ZERO,
        connection_idle_timeout: Duration::from_secs(1),
        // The GOAWAY's PING is never answered by this client: it waits for
        // the grace period.
        max_connection_age_grace: Duration::from_millis(500),
        ..common::config(&common::test_models())
    };
    let server = common::start(config).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(frames::PREFACE).await.unwrap();
    stream
        .write_all(&frames::frame(frames::SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    let start = Instant::now();
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let idle = start.elapsed();
    println!("an idle connection was closed after {idle:?}");
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "{idle:?}"
    );
    // The SDK's connection, busy every 100 ms, stays.
    for _ in 0..20 {
        assert!(server.client.is_live().await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_until_refused() {
    let _serial = SERIAL.lock().await;
    let (server, config) = server().await;
    let addr = server.addr;
    // The well-behaved client's connection is one of the 64.
    measure("connections until refused", &server.client, || async move {
        let mut open = Vec::new();
        let refused = loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(frames::PREFACE).await.unwrap();
            let mut byte = [0u8; 1];
            // An accepted connection answers with SETTINGS; a refused one
            // is closed at once.
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break open.len(),
                Ok(Ok(_)) => open.push(stream),
                Err(_) => panic!("no answer within 5 s"),
            }
            assert!(
                open.len() <= config.max_connections,
                "more than max_connections accepted"
            );
        };
        println!("refused after {refused} hostile connections");
        assert_eq!(
            refused + 1,
            config.max_connections,
            "the limit counts every connection"
        );
        // Once some close, new connections are accepted again.
        drop(open.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(frames::PREFACE).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "accepted after one closed"
        );
        drop(stream);
    })
    .await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_sends_goaway_and_the_sdk_reconnects() {
    let _serial = SERIAL.lock().await;
    let config = Config {
        max_connection_age: Duration::from_millis(500),
        max_connection_age_grace: Duration::from_secs(1),
        ..common::config(&common::test_models())
    };
    let server = common::start(config).await;
    let (mut writer, seen) = raw(server.addr).await;
    let start = Instant::now();
    while !seen.goaway.load(Ordering::Relaxed) {
        assert!(start.elapsed() < Duration::from_secs(10), "no GOAWAY");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("GOAWAY after {:?}", start.elapsed());
    assert!(start.elapsed() >= Duration::from_millis(400));
    // A stream opened before the GOAWAY and never finished is cut at the
    // end of the grace period: the connection closes.
    let _ = writer
        .write_all(&frames::grpc_headers(
            1,
            "/inference.GRPCInferenceService/ServerLive",
            false,
        ))
        .await;
    while !seen.closed.load(Ordering::Relaxed) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not closed after the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The SDK's connection is aged too, and its calls keep succeeding
    // across the reconnects. A call the client dispatches just as its
    // connection takes the GOAWAY is cancelled by hyper's client before it
    // is sent (tonic does not re-dispatch it); retrying it is safe, and
    // what the SDK's retry policy is for.
    let client = server.client.clone().with_retry(
        oxserve_client::RetryPolicy::default()
            .retry_on([tonic::Code::Unavailable, tonic::Code::Cancelled]),
    );
    for _ in 0..20 {
        assert!(client.is_live().await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_say_nothing_are_closed() {
    let _serial = SERIAL.lock().await;
    // No idle timeout and no keep-alive: only the first-byte limit (10 s,
    // the TLS handshake's) ends a connection that never speaks.
    let config = Config {
        http2_keepalive_interval: Duration::ZERO,
        ..common::config(&common::test_models())
    };
    let server = common::start(config).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let start = Instant::now();
    let mut sink = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut sink)).await;
    let silent = start.elapsed();
    println!("a silent connection was closed after {silent:?}");
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(
        silent >= Duration::from_secs(9) && silent < Duration::from_secs(15),
        "{silent:?}"
    );
    server.stop().await.unwrap();
}
