//! Overload (issue 12, item 6): open-loop load at three times the measured
//! capacity. Accepted requests keep a bounded p99, the rest are refused at
//! once with UNAVAILABLE and cost little CPU, resident memory stays under
//! a stated bound, and latency is back to normal within a second of the
//! load stopping.
//!
//! It runs for over a minute, so it is `#[ignore]`d in `cargo test` and
//! run by scripts/test.sh (`cargo test --test overload -- --ignored`).
//! `OVERLOAD_SECONDS` shortens the open-loop phase for a quick look.
//!
//! The model is `tests/models/spin` (ITERATIONS 128×128 products, about
//! 0.1 ms each), served alone with one instance and a queue of
//! [`QUEUE`] requests (`max_queue_size`): a request waits behind at most
//! that many, so an accepted request's latency is bounded by about
//! (QUEUE + 1) service times however much load arrives.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, start, test_models};
use oxserve_client::{Client, RetryPolicy};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Code;

/// Connections the load is spread over.
const CONNECTIONS: usize = 8;
/// The model's queue bound.
const QUEUE: usize = 8;
/// Iterations per request: about 8 ms of compute, so that a request's
/// cost is mostly the model's, as in production, not the (debug-built)
/// transport's. At 40 (~2.5 ms) the transport of 3x capacity (over 1,000
/// requests/s at ~0.9 ms of debug-build CPU each) saturated both cores on
/// its own, and every latency measured the CPU backlog, not the server's
/// queueing: refusals took 35-60 ms at p50, accepted requests 1 s at p99.
const ITERATIONS: i64 = 120;
/// Resident memory the test process (server and load generator) may
/// reach, and the most it may grow during the overload.
const RSS_LIMIT_MIB: f64 = 512.0;
const RSS_GROWTH_MIB: f64 = 64.0;

/// Resident set size of this process, MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SC_CLK_TCK is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn spin(client: &Client) -> Result<Duration, Code> {
    let started = Instant::now();
    client
        .infer("spin")
        .input("ITERATIONS", [1], &[ITERATIONS])
        .send()
        .await
        .map(|_| started.elapsed())
        .map_err(|e| e.code().unwrap_or(Code::Unknown))
}

/// A repository holding only `spin`.
fn spin_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("spin/1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(
        test_models().join("spin/1/model.onnx"),
        version.join("model.onnx"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for over a minute; scripts/test.sh runs it"]
async fn three_times_capacity_is_refused_cheaply_and_accepted_work_stays_fast() {
    let seconds: u64 = std::env::var("OVERLOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let repository = spin_repository();
    let mut config = config(repository.path());
    config.max_queue_size = QUEUE;
    config.instances = oxserve::InstanceCount::Fixed(1);
    // One ONNX Runtime thread, leaving the other core to the async side
    // (server and load generator share this process): with the model on
    // both cores, the generator's own backlog stalled the runtime for
    // seconds and showed up as server latency.
    config.intra_op_threads = 1;
    let server = start(config).await;
    // No retries: a refusal must be seen as one, not retried after a
    // back-off (the SDK retries UNAVAILABLE by default).
    //
    // Several connections, as many clients would open: one HTTP/2
    // connection is driven by one task on each side, and in a debug build
    // a single one saturates near 1,000 requests/s, which stalled answers
    // (refusals and accepted alike) for over a second at a time.
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = Client::builder(format!("http://{}", server.addr))
            .retry(RetryPolicy::never())
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .unwrap();
        clients.push(client);
    }
    let client = clients[0].clone();
    for _ in 0..20 {
        spin(&client).await.unwrap();
    }

    // Normal latency: one request at a time.
    let mut single: Vec<Duration> = Vec::new();
    for _ in 0..100 {
        single.push(spin(&client).await.unwrap());
    }
    single.sort();
    let normal = percentile(&single, 0.5);

    // Capacity: closed loop, enough clients to keep the model busy.
    let closed_for = Duration::from_secs(5);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..4 {
        let client = clients[worker % CONNECTIONS].clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while started.elapsed() < closed_for {
                spin(&client).await.unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut completed = 0;
    for w in workers {
        completed += w.await.unwrap();
    }
    let closed_elapsed = started.elapsed();
    let cpu_per_request = (cpu_time() - cpu_before).as_secs_f64() / completed as f64;
    let capacity = completed as f64 / closed_elapsed.as_secs_f64();
    eprintln!(
        "normal latency p50 {normal:?}; capacity {capacity:.0} req/s (closed loop, 4 clients); CPU {:.0} µs per request",
        cpu_per_request * 1e6
    );

    // Open loop at three times that: requests are sent on schedule,
    // whatever the answers.
    let rate = 3.0 * capacity;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let rss_before = rss_mib();
    let rss_peak = Arc::new(Mutex::new(rss_before));
    let sampler = {
        let rss_peak = Arc::clone(&rss_peak);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = rss_mib();
                let mut peak = rss_peak.lock().unwrap();
                *peak = peak.max(now);
            }
        })
    };
    let accepted: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let rejected: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let other: Arc<Mutex<Vec<Code>>> = Arc::default();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        sent += 1;
        let (client, accepted, rejected, other) = (
            clients[sent as usize % CONNECTIONS].clone(),
            Arc::clone(&accepted),
            Arc::clone(&rejected),
            Arc::clone(&other),
        );
        in_flight.spawn(async move {
            let began = Instant::now();
            match spin(&client).await {
                Ok(latency) => accepted.lock().unwrap().push(latency),
                Err(Code::Unavailable) => rejected.lock().unwrap().push(began.elapsed()),
                Err(code) => other.lock().unwrap().push(code),
            }
        });
        // Reap what has finished, so the set stays small.
        while in_flight.try_join_next().is_some() {}
    }
    let load_stopped = Instant::now();
    let load_elapsed = load_stopped - started;
    while in_flight.join_next().await.is_some() {}
    let cpu_open = cpu_time() - cpu_before;

    // Back to normal: from the moment the load stopped, how long until a
    // request is answered in normal time.
    let bound = normal * 2 + Duration::from_millis(5);
    let recovered = loop {
        let latency = spin(&client).await.unwrap();
        if latency <= bound {
            break load_stopped.elapsed();
        }
        assert!(
            load_stopped.elapsed() < Duration::from_secs(10),
            "latency still {latency:?} 10 s after the load"
        );
    };
    sampler.abort();

    let mut accepted = accepted.lock().unwrap().clone();
    let mut rejected = rejected.lock().unwrap().clone();
    let other = other.lock().unwrap().clone();
    accepted.sort();
    rejected.sort();
    let rss_peak = *rss_peak.lock().unwrap();
    let achieved = sent as f64 / load_elapsed.as_secs_f64();
    let accepted_rate = accepted.len() as f64 / load_elapsed.as_secs_f64();
    // CPU of the rejections: what the open loop cost beyond the accepted
    // requests at the closed loop's cost each, per rejection.
    let rejection_cpu = (cpu_open.as_secs_f64() - accepted.len() as f64 * cpu_per_request).max(0.0)
        / rejected.len().max(1) as f64;
    eprintln!(
        "open loop {seconds} s: target {rate:.0} req/s, sent {achieved:.0} req/s; accepted {} ({accepted_rate:.0}/s) p50 {:?} p99 {:?} max {:?}; rejected {} (UNAVAILABLE) p50 {:?} p99 {:?}; other {}; CPU {:.2} s, about {:.0} µs per rejection vs {:.0} µs per accepted request; RSS {rss_before:.0} MiB before, peak {rss_peak:.0} MiB; back to normal latency ({bound:?}) {recovered:?} after the load stopped",
        accepted.len(),
        percentile(&accepted, 0.5),
        percentile(&accepted, 0.99),
        accepted.last().copied().unwrap_or_default(),
        rejected.len(),
        percentile(&rejected, 0.5),
        percentile(&rejected, 0.99),
        other.len(),
        cpu_open.as_secs_f64(),
        rejection_cpu * 1e6,
        cpu_per_request * 1e6,
    );

    assert!(other.is_empty(), "unexpected codes: {other:?}");
    assert!(
        achieved > 2.0 * capacity,
        "the generator must overload the server: sent {achieved:.0}/s for a capacity of {capacity:.0}/s"
    );
    assert!(
        rejected.len() as f64 > 0.3 * sent as f64,
        "most of the excess is refused"
    );
    // The server keeps working at capacity while overloaded.
    assert!(
        accepted_rate > 0.5 * capacity,
        "accepted {accepted_rate:.0}/s of a capacity of {capacity:.0}/s"
    );
    // An accepted request waits behind at most QUEUE others: its p99 is
    // bounded by the queue, not by how long the overload lasts (without
    // the bound, 60 s at 3x capacity would queue 2 minutes of work).
    // The factor leaves room for a shared, noisy CI machine.
    let p99_bound = (normal * (QUEUE as u32 + 2) * 5).max(Duration::from_millis(500));
    let p99 = percentile(&accepted, 0.99);
    assert!(p99 <= p99_bound, "accepted p99 {p99:?} above {p99_bound:?}");
    // Refusals are immediate: typically quicker than one request's
    // compute, and never queued behind the work, so well under what an
    // accepted request waits (2-core machine, debug build: 1.4-1.6 ms
    // against 50-70 ms).
    let (rejected_p50, rejected_p99) = (percentile(&rejected, 0.5), percentile(&rejected, 0.99));
    let accepted_p50 = percentile(&accepted, 0.5);
    assert!(
        rejected_p50
            <= (normal * 2)
                .max(Duration::from_millis(10))
                .max(accepted_p50 / 2),
        "rejection p50 {rejected_p50:?}, normal latency {normal:?}, accepted p50 {accepted_p50:?}"
    );
    assert!(
        rejected_p99 <= p99_bound / 2,
        "rejection p99 {rejected_p99:?}"
    );
    // And cheap next to the work they refuse.
    assert!(
        rejection_cpu < 0.5 * cpu_per_request,
        "a rejection costs {:.0} µs of CPU, an accepted request {:.0} µs",
        rejection_cpu * 1e6,
        cpu_per_request * 1e6
    );
    assert!(rss_peak < RSS_LIMIT_MIB, "peak RSS {rss_peak:.0} MiB");
    assert!(
        rss_peak - rss_before < RSS_GROWTH_MIB,
        "RSS grew from {rss_before:.0} to {rss_peak:.0} MiB"
    );
    assert!(
        recovered <= Duration::from_secs(1),
        "back to normal latency only {recovered:?} after the load stopped"
    );
    server.stop().await.unwrap();
}
