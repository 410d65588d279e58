//! End-to-end load generator built on `oxserve-client`: many concurrent
//! `ModelInfer` calls over one or more HTTP/2 connections, closed-loop (each
//! of `--concurrency` workers sends its next request when the previous one
//! is answered) or open-loop at a fixed `--rate`. Reports throughput,
//! latency percentiles, errors by gRPC code, the CPU time client and server
//! spent per request, and the server's resident memory.
//!
//! ```text
//! # against a server started separately (the honest measurement):
//! cargo bench --bench loadgen -- --addr 127.0.0.1:8001 --server-pid $PID \
//!     --model mlp --concurrency 32 --duration 10s --runs 3
//! # or against one started in this process on 127.0.0.1:0:
//! cargo bench --bench loadgen -- --serve examples/models --model mlp --concurrency 32
//! ```
//!
//! Inputs are random data of the model's input shapes from `ModelMetadata`
//! (dimension 0 set to `--batch`, other variable dimensions to 1 unless
//! `--shape` says otherwise). The request is built once and cloned per
//! call; the client never retries, so every failure is counted.

mod common;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/target.rs"]
mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use oxserve_client::{Client, pb};
use serde::Serialize;

use common::rss_kib;
use common::{Rng, constant_raw, median, random_raw};
use report::{
    Recorder, RunStats, Summary, cpu_secs, mib, print_run, process_tree, sum_cpu_secs, sum_rss_kib,
};
use target::{connect, serve_in_process, wait_ready};

/// Load generator for KServe v2 gRPC inference servers.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "loadgen")]
struct Args {
    /// Server to load, HOST:PORT or a URL (plaintext gRPC).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "serve")]
    addr: Option<String>,
    /// Start oxserve in this process on 127.0.0.1:0 serving this model
    /// repository (the default, with examples/models, when --addr is not
    /// given).
    #[arg(long, value_name = "DIR")]
    serve: Option<PathBuf>,
    /// With --serve: max_batch_size.
    #[arg(long, value_name = "N")]
    max_batch_size: Option<usize>,
    /// With --serve: preferred_batch_sizes, comma-separated.
    #[arg(long, value_name = "N,N", value_delimiter = ',')]
    preferred_batch_sizes: Option<Vec<usize>>,
    /// With --serve: max_queue_delay, e.g. 200us.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    max_queue_delay: Option<Duration>,
    /// With --serve: max_queue_size.
    #[arg(long, value_name = "N")]
    max_queue_size: Option<usize>,
    /// With --serve: instances.
    #[arg(long, value_name = "N")]
    instances: Option<usize>,
    /// With --serve: intra_op_threads.
    #[arg(long, value_name = "N")]
    intra_op_threads: Option<usize>,
    /// With --serve: the server's async worker threads (default: cores).
    #[arg(long, value_name = "N")]
    server_threads: Option<usize>,
    /// Model to call.
    #[arg(long, default_value = "mlp")]
    model: String,
    /// Model version (default: the server's choice).
    #[arg(long)]
    version: Option<String>,
    /// Rows per request (dimension 0 of every input).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// An input's full shape, overriding the metadata: NAME=D,D,...
    /// (repeatable).
    #[arg(long, value_name = "NAME=D,D")]
    shape: Vec<String>,
    /// Fill an input with one value instead of random data: NAME=VALUE
    /// (repeatable; e.g. an attention mask of 1s, token type ids of 0).
    #[arg(long, value_name = "NAME=VALUE")]
    constant: Vec<String>,
    /// Requests in flight at once (closed loop: workers; open loop: cap).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Separate HTTP/2 connections; requests go to them in turn.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measurement time per run, e.g. 10s (default 10s unless --requests).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    duration: Option<Duration>,
    /// Requests per run instead of a duration.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    requests: Option<u64>,
    /// Unmeasured load before the first run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    warmup: Duration,
    /// Open loop: send this many requests per second on a fixed schedule,
    /// latency counted from each request's scheduled time.
    #[arg(long, value_name = "PER_SEC")]
    rate: Option<f64>,
    /// Measured runs; the summary is the median of each figure.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Per-request deadline.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    /// How long to wait for the server to accept connections and for the
    /// model to be ready.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    wait: Duration,
    /// The load generator's async worker threads (default: the smaller
    /// of --concurrency and the number of cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Process id of a separately started server, for its memory and CPU.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// With --server-pid: count the server's descendant processes too
    /// (CPU summed; resident memory summed, so shared pages count once per
    /// process). For servers made of several processes: Triton's Python
    /// backend stubs, MLServer's inference workers.
    #[arg(long, requires = "server_pid")]
    server_tree: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    target: String,
    /// The server's name and version, from ServerMetadata.
    server: Option<(String, String)>,
    args: Args,
    /// Input names, datatypes and shapes sent.
    inputs: Vec<(String, String, Vec<i64>)>,
    request_bytes: usize,
    server_rss_mib_idle: Option<f64>,
    runs: Vec<RunStats>,
    summary: Summary,
}

/// When a run stops: at a deadline or after a number of requests.
#[derive(Debug, Clone)]
enum Stop {
    At(Instant),
    After(Arc<AtomicU64>),
}

impl Stop {
    fn new(duration: Option<Duration>, requests: Option<u64>) -> Stop {
        match requests {
            Some(n) => Stop::After(Arc::new(AtomicU64::new(n))),
            None => Stop::At(Instant::now() + duration.unwrap_or(Duration::from_secs(10))),
        }
    }

    /// Claims the next request; false once the run is over.
    fn next(&self) -> bool {
        match self {
            Stop::At(deadline) => Instant::now() < *deadline,
            Stop::After(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// The connections, used in turn.
struct Pool {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl Pool {
    fn pick(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.clients[i % self.clients.len()]
    }
}

/// Closed loop: `concurrency` workers, each sending its next request when
/// the previous one is answered.
async fn closed_loop(
    pool: &Arc<Pool>,
    request: &Arc<pb::ModelInferRequest>,
    concurrency: usize,
    stop: Stop,
) -> Recorder {
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let pool = Arc::clone(pool);
            let request = Arc::clone(request);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut recorder = Recorder::default();
                while stop.next() {
                    let started = Instant::now();
                    let result = pool.pick().infer_raw((*request).clone()).await;
                    recorder.record(started, &result);
                }
                recorder
            })
        })
        .collect();
    let mut all = Recorder::default();
    for worker in workers {
        all.merge(worker.await.expect("workers do not panic"));
    }
    all
}

/// Open loop: request `i` is due at `start + i / rate`; at most
/// `concurrency` are in flight, and a request held back by that limit
/// counts its wait in its latency (no coordinated omission).
///
/// The schedule is kept by a plain thread with `std::thread::sleep`
/// (tens of microseconds late at most): tokio's timer has millisecond
/// resolution, which would send requests in bursts and add up to a
/// millisecond to every latency.
async fn open_loop(
    pool: &Arc<Pool>,
    request: &Arc<pb::ModelInferRequest>,
    concurrency: usize,
    rate: f64,
    stop: Stop,
) -> Recorder {
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let cap = concurrency.clamp(1, 1 << 20);
    let limit = Arc::new(tokio::sync::Semaphore::new(cap));
    let handle = tokio::runtime::Handle::current();
    let dispatcher = {
        let (pool, request, recorder, limit) = (
            Arc::clone(pool),
            Arc::clone(request),
            Arc::clone(&recorder),
            Arc::clone(&limit),
        );
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut i: u64 = 0;
            while stop.next() {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                i += 1;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let permit = handle
                    .block_on(Arc::clone(&limit).acquire_owned())
                    .expect("the semaphore is never closed");
                let (pool, request, recorder) = (
                    Arc::clone(&pool),
                    Arc::clone(&request),
                    Arc::clone(&recorder),
                );
                handle.spawn(async move {
                    let result = pool.pick().infer_raw((*request).clone()).await;
                    recorder
                        .lock()
                        .expect("recording does not panic")
                        .record(due, &result);
                    drop(permit);
                });
            }
        })
    };
    dispatcher.await.expect("the dispatcher does not panic");
    // Every permit back means every request has been answered and recorded.
    let _all = limit
        .acquire_many(cap as u32)
        .await
        .expect("the semaphore is never closed");
    std::mem::take(&mut *recorder.lock().expect("recording does not panic"))
}

/// One measured (or warm-up) run.
async fn run_once(
    args: &Args,
    pool: &Arc<Pool>,
    request: &Arc<pb::ModelInferRequest>,
    stop: Stop,
    rss_pid: Option<Option<u32>>,
) -> RunStats {
    // The server's processes, listed once per run: the server itself, or
    // with --server-tree its descendants too.
    let pids: Arc<Vec<u32>> = Arc::new(
        args.server_pid
            .map(|p| process_tree(p, args.server_tree))
            .unwrap_or_default(),
    );
    let rss = move |pids: &[u32]| match rss_pid {
        Some(None) => rss_kib(None),
        Some(Some(_)) => sum_rss_kib(pids),
        None => None,
    };
    let rss_before = rss(&pids);
    // Sample the server's memory while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = rss_pid.map(|_| {
        let sampling = Arc::clone(&sampling);
        let pids = Arc::clone(&pids);
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(rss(&pids).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    });
    let cpu_self = cpu_secs(None);
    let cpu_server = sum_cpu_secs(&pids);
    let started = Instant::now();
    let mut recorder = match args.rate {
        Some(rate) => open_loop(pool, request, args.concurrency, rate, stop).await,
        None => closed_loop(pool, request, args.concurrency, stop).await,
    };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_self = cpu_self.zip(cpu_secs(None)).map(|(a, b)| b - a);
    let cpu_server = cpu_server.zip(sum_cpu_secs(&pids)).map(|(a, b)| b - a);
    sampling.store(false, Ordering::Relaxed);
    let peak = match sampler {
        Some(s) => Some(s.await.expect("the sampler does not panic")),
        None => None,
    };
    let rss_after = rss(&pids);

    let lat = &mut recorder.latencies_ns;
    lat.sort_unstable();
    let ok = lat.len() as u64;
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[rank.clamp(1, lat.len()) - 1] as f64 / 1e6
    };
    let failed: u64 = recorder.errors.values().sum();
    let per_request = |cpu: f64| cpu * 1e6 / ok.max(1) as f64;
    RunStats {
        requests_ok: ok,
        requests_failed: failed,
        errors: recorder.errors.clone(),
        error_samples: recorder.samples.clone(),
        elapsed_secs: elapsed,
        requests_per_sec: ok as f64 / elapsed,
        inferences_per_sec: (ok * args.batch as u64) as f64 / elapsed,
        latency_ms_mean: if lat.is_empty() {
            f64::NAN
        } else {
            lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1e6
        },
        latency_ms_p50: pct(50.0),
        latency_ms_p90: pct(90.0),
        latency_ms_p99: pct(99.0),
        latency_ms_max: pct(100.0),
        client_cpu_us_per_request: cpu_self.map_or(f64::NAN, per_request),
        server_cpu_us_per_request: cpu_server.map(per_request),
        server_rss_mib_before: mib(rss_before),
        server_rss_mib_peak: mib(peak.map(|p| p.max(rss_after.unwrap_or(0)))),
        server_rss_mib_after: mib(rss_after),
    }
}

/// The request: every model input with random data of its shape.
async fn build_request(
    args: &Args,
    client: &Client,
) -> Result<(pb::ModelInferRequest, Vec<(String, String, Vec<i64>)>), String> {
    let metadata = client
        .model_metadata(&args.model, args.version.as_deref())
        .await
        .map_err(|e| format!("ModelMetadata for '{}': {e}", args.model))?;
    let mut overrides = BTreeMap::new();
    for s in &args.shape {
        let (name, dims) = s
            .split_once('=')
            .ok_or_else(|| format!("--shape '{s}': expected NAME=D,D,..."))?;
        let dims = dims
            .split(',')
            .map(|d| d.trim().parse::<i64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--shape '{s}': {e}"))?;
        overrides.insert(name.to_string(), dims);
    }
    let mut constants = BTreeMap::new();
    for s in &args.constant {
        let value = s
            .split_once('=')
            .and_then(|(name, v)| Some((name, v.trim().parse::<f64>().ok()?)));
        let Some((name, value)) = value else {
            return Err(format!("--constant '{s}': expected NAME=NUMBER"));
        };
        constants.insert(name.to_string(), value);
    }
    for name in overrides.keys().chain(constants.keys()) {
        if !metadata.inputs.iter().any(|i| &i.name == name) {
            return Err(format!("model '{}' has no input '{name}'", args.model));
        }
    }
    let mut rng = Rng::new(0x5eed);
    let mut request = pb::ModelInferRequest {
        model_name: args.model.clone(),
        model_version: args.version.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut described = Vec::new();
    for input in &metadata.inputs {
        let shape: Vec<i64> = match overrides.get(&input.name) {
            Some(dims) => dims.clone(),
            None => input
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match (i, d) {
                    (0, d) if d < 0 => args.batch as i64,
                    (_, d) if d < 0 => 1,
                    (_, d) => d,
                })
                .collect(),
        };
        let count = shape.iter().product::<i64>().max(0) as usize;
        let data = match constants.get(&input.name) {
            Some(&value) => constant_raw(&input.datatype, count, value),
            None => random_raw(&input.datatype, count, &mut rng),
        };
        let data = data.ok_or_else(|| {
            format!(
                "input '{}' has datatype '{}', which the load generator cannot fill",
                input.name, input.datatype
            )
        })?;
        request
            .inputs
            .push(pb::model_infer_request::InferInputTensor {
                name: input.name.clone(),
                datatype: input.datatype.clone(),
                shape: shape.clone(),
                ..Default::default()
            });
        request.raw_input_contents.push(data.into());
        described.push((input.name.clone(), input.datatype.clone(), shape));
    }
    Ok((request, described))
}

async fn load(args: Args, target: String, rss_pid: Option<Option<u32>>) -> Result<Report, String> {
    let mut clients = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        clients.push(connect(&args, &target).await?);
    }
    wait_ready(&args, &clients[0]).await?;
    let server = clients[0]
        .server_metadata()
        .await
        .ok()
        .map(|m| (m.name, m.version));
    let (request, inputs) = build_request(&args, &clients[0]).await?;
    let request_bytes = prost::Message::encoded_len(&request);

    // One call up front, so a wrong request fails fast and clearly.
    let first = clients[0]
        .infer_raw(request.clone())
        .await
        .map_err(|e| format!("the first request failed: {e}"))?;
    if !args.json {
        let outputs: Vec<String> = first
            .outputs
            .iter()
            .map(|o| format!("{} {} {:?}", o.name, o.datatype, o.shape))
            .collect();
        eprintln!(
            "loadgen: {target} model {} inputs {:?} ({request_bytes} B/request) -> {}",
            args.model,
            inputs,
            outputs.join(", ")
        );
    }
    let idle = match rss_pid {
        Some(Some(pid)) => sum_rss_kib(&process_tree(pid, args.server_tree)),
        Some(None) => rss_kib(None),
        None => None,
    };

    let pool = Arc::new(Pool {
        clients,
        next: AtomicUsize::new(0),
    });
    let request = Arc::new(request);
    if !args.warmup.is_zero() {
        run_once(
            &args,
            &pool,
            &request,
            Stop::new(Some(args.warmup), None),
            None,
        )
        .await;
    }
    let mut runs = Vec::new();
    for i in 0..args.runs.max(1) {
        let stats = run_once(
            &args,
            &pool,
            &request,
            Stop::new(args.duration, args.requests),
            rss_pid,
        )
        .await;
        if !args.json {
            print_run(i + 1, &stats);
        }
        runs.push(stats);
    }
    let pick = |f: fn(&RunStats) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let summary = Summary {
        median_requests_per_sec: pick(|r| r.requests_per_sec),
        median_inferences_per_sec: pick(|r| r.inferences_per_sec),
        median_latency_ms_p50: pick(|r| r.latency_ms_p50),
        median_latency_ms_p90: pick(|r| r.latency_ms_p90),
        median_latency_ms_p99: pick(|r| r.latency_ms_p99),
        total_failed: runs.iter().map(|r| r.requests_failed).sum(),
    };
    Ok(Report {
        target,
        server,
        args,
        inputs,
        request_bytes,
        server_rss_mib_idle: mib(idle),
        runs,
        summary,
    })
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; it means nothing here.
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let mut _server = None;
    let (target, rss_pid) = match &args.addr {
        Some(addr) if addr.contains("://") => (addr.clone(), args.server_pid.map(Some)),
        Some(addr) => (format!("http://{addr}"), args.server_pid.map(Some)),
        None => {
            let repository = args
                .serve
                .clone()
                .unwrap_or_else(|| PathBuf::from("examples/models"));
            match serve_in_process(&args, repository) {
                Ok((target, runtime, stop)) => {
                    _server = Some((runtime, stop));
                    (target, Some(None))
                }
                Err(e) => {
                    eprintln!("loadgen: cannot start the in-process server: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    // Closed-loop workers cannot keep more threads than themselves busy,
    // and on a small machine an idle extra thread only steals time from
    // the server (at concurrency 1, two threads cost ~40 us of latency).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .thread_name("loadgen")
        .worker_threads(match args.threads {
            Some(n) => n.max(1),
            None => args.concurrency.clamp(1, cores),
        });
    let runtime = builder.build().expect("a runtime can be built");
    let json = args.json;
    match runtime.block_on(load(args, target, rss_pid)) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("plain data serializes")
                );
            } else {
                let s = &report.summary;
                println!(
                    "median of {} run(s): {:.0} req/s {:.0} inf/s | latency ms p50 {:.3} p90 {:.3} p99 {:.3} | failed {}",
                    report.runs.len(),
                    s.median_requests_per_sec,
                    s.median_inferences_per_sec,
                    s.median_latency_ms_p50,
                    s.median_latency_ms_p90,
                    s.median_latency_ms_p99,
                    s.total_failed
                );
                if let Some(idle) = report.server_rss_mib_idle {
                    println!("server rss idle (after the first request): {idle:.1} MiB");
                }
            }
            if let Some((server, stop)) = _server.take() {
                let _ = stop.send(());
                server.shutdown_timeout(Duration::from_secs(5));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
