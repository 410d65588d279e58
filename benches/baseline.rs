//! The in-process ONNX Runtime baseline: the server's own backend (the same
//! process-wide environment, `Instance::load`, warm-up and `run_batch`, so
//! the same session options and the same concatenate → run → split) driven
//! in a tight loop by `--instances` threads, with no gRPC, no queue and no
//! client. Its inferences/s at the best batch size are the physical limit
//! the server's throughput is compared to.
//!
//! ```text
//! cargo bench --bench baseline -- --model mlp --batch-sizes 1,2,4,8,16,32,64 \
//!     --instances 1 --intra-op-threads 1 --duration 3s --runs 3
//! ```
//!
//! `--split` runs each batch of N rows as N one-row requests merged by
//! `run_batch`, which is exactly what the server does with N concurrent
//! batch-1 requests; without it, one request carries all N rows.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use oxserve::internals::{
    DecodedRequest, Instance, Memory, ModelSource, SessionOptions, Tensor, Threads, environment,
};
use serde::Serialize;

use common::{Rng, median, random_raw};

/// In-process ONNX Runtime throughput of one model per batch size.
#[derive(Debug, Parser)]
#[command(name = "baseline")]
struct Args {
    /// Model repository: <DIR>/<model>/<version>/model.onnx.
    #[arg(long, default_value = "examples/models")]
    model_repository: PathBuf,
    /// Model name in the repository.
    #[arg(long, default_value = "mlp")]
    model: String,
    /// Version directory; default: the highest number present.
    #[arg(long)]
    version: Option<u64>,
    /// An .onnx file to load instead of a repository model.
    #[arg(long, value_name = "FILE")]
    model_file: Option<PathBuf>,
    /// Rows per execution, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64",
        value_name = "N,N"
    )]
    batch_sizes: Vec<usize>,
    /// Sessions, each driven by its own thread (the server's `instances`).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// ONNX Runtime intra-op threads per session (the server's
    /// `intra_op_threads`; 0 = all cores).
    #[arg(long, default_value_t = 1)]
    intra_op_threads: usize,
    /// Measurement time per batch size and run, e.g. 3s, 500ms.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time per batch size before the runs.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measured runs per batch size; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Run N one-row requests merged into one execution instead of one
    /// request of N rows.
    #[arg(long)]
    split: bool,
    /// Let idle intra-op threads spin (the server's default is not to).
    #[arg(long)]
    spinning: bool,
    /// Keep the arena's memory after each run (the server's default is to
    /// shrink it).
    #[arg(long)]
    no_shrink: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// The result for one batch size.
#[derive(Debug, Serialize)]
struct Row {
    batch_size: usize,
    /// Median over the runs.
    inferences_per_sec: f64,
    /// Median over the runs of the median execution time.
    execution_ms_p50: f64,
    /// Every run's inferences/s.
    runs: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    model_file: PathBuf,
    instances: usize,
    intra_op_threads: usize,
    split: bool,
    duration_secs: f64,
    runs: usize,
    results: Vec<Row>,
    best: Option<Best>,
}

#[derive(Debug, Serialize)]
struct Best {
    batch_size: usize,
    inferences_per_sec: f64,
}

/// `<repo>/<model>/<version>/model.onnx`, the highest version if none given.
fn model_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(file) = &args.model_file {
        return Ok(file.clone());
    }
    let dir = args.model_repository.join(&args.model);
    let version = match args.version {
        Some(v) => v,
        None => std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .ok_or_else(|| format!("{} has no numbered version directory", dir.display()))?,
    };
    Ok(dir.join(version.to_string()).join("model.onnx"))
}

/// Random requests for `instance`'s inputs: one of `rows` rows, or `rows`
/// of one row each with `split`. Variable dimensions other than the first
/// are 1.
fn requests(instance: &Instance, rows: usize, split: bool, seed: u64) -> Vec<DecodedRequest> {
    let spec = instance.spec();
    let mut rng = Rng::new(seed);
    let (count, per) = if split { (rows, 1) } else { (1, rows) };
    (0..count)
        .map(|_| DecodedRequest {
            inputs: spec
                .inputs
                .iter()
                .map(|t| {
                    let shape: Vec<usize> = t
                        .dims
                        .iter()
                        .enumerate()
                        .map(|(i, &d)| {
                            if i == 0 && d < 0 {
                                per
                            } else {
                                d.max(1) as usize
                            }
                        })
                        .collect();
                    let data = random_raw(t.datatype.as_str(), shape.iter().product(), &mut rng)
                        .expect("every server datatype is a protocol datatype");
                    Tensor {
                        name: t.name.clone(),
                        datatype: t.datatype,
                        shape,
                        data: Bytes::from(data),
                    }
                })
                .collect(),
            outputs: (0..spec.outputs.len()).collect(),
            batch_size: Some(per),
        })
        .collect()
}

/// One thread's executions.
struct Timings {
    /// How long each execution took.
    times: Vec<Duration>,
    /// From the common start to the last execution's end.
    elapsed: Duration,
}

/// Every instance runs `batch` back to back for `duration`, all starting
/// together. Returns rows per second over all instances and the median
/// execution time.
fn measure(
    instances: &mut [Instance],
    batch: &[Vec<DecodedRequest>],
    rows: usize,
    duration: Duration,
) -> Result<(f64, Duration), String> {
    let start = Arc::new(Barrier::new(instances.len()));
    let outcomes: Vec<Result<Timings, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = instances
            .iter_mut()
            .zip(batch)
            .map(|(instance, requests)| {
                let start = Arc::clone(&start);
                scope.spawn(move || {
                    let refs: Vec<&DecodedRequest> = requests.iter().collect();
                    let mut times = Vec::new();
                    start.wait();
                    let began = Instant::now();
                    let deadline = began + duration;
                    loop {
                        let t = Instant::now();
                        if t >= deadline && !times.is_empty() {
                            break;
                        }
                        instance.run_batch(&refs).map_err(|e| e.to_string())?;
                        times.push(t.elapsed());
                    }
                    Ok(Timings {
                        times,
                        elapsed: began.elapsed(),
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark threads do not panic"))
            .collect()
    });
    let mut per_sec = 0.0;
    let mut all_times = Vec::new();
    for outcome in outcomes {
        let Timings { times, elapsed } = outcome?;
        per_sec += (times.len() * rows) as f64 / elapsed.as_secs_f64();
        all_times.extend(times);
    }
    all_times.sort();
    Ok((per_sec, all_times[all_times.len() / 2]))
}

fn run(args: &Args) -> Result<Report, String> {
    let path = model_path(args)?;
    let env = environment(None).map_err(|e| e.to_string())?;
    let defaults = SessionOptions::default();
    let options = SessionOptions {
        threads: Threads {
            intra_op: args.intra_op_threads,
            spinning: args.spinning,
            ..defaults.threads.clone()
        },
        memory: Memory {
            shrink_after_run: !args.no_shrink,
            ..defaults.memory.clone()
        },
        ..defaults
    };
    let mut instances = (0..args.instances.max(1))
        .map(|_| {
            let (mut instance, _) = Instance::load(
                &env,
                &args.model,
                &ModelSource::File(path.clone()),
                &options,
            )
            .map_err(|e| e.to_string())?;
            instance.warm_up().map_err(|e| e.to_string())?;
            Ok(instance)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let batchable = instances[0]
        .spec()
        .inputs
        .iter()
        .all(|t| t.dims.first().is_some_and(|&d| d < 0));

    let mut results = Vec::new();
    for &rows in &args.batch_sizes {
        if rows == 0 || (!batchable && rows > 1) {
            eprintln!("skipping batch size {rows}: the model's dimension 0 is fixed");
            continue;
        }
        let batch: Vec<Vec<DecodedRequest>> = instances
            .iter()
            .enumerate()
            .map(|(i, inst)| requests(inst, rows, args.split, 1 + i as u64))
            .collect();
        measure(&mut instances, &batch, rows, args.warmup)?;
        let mut runs = Vec::new();
        let mut exec_ms = Vec::new();
        for _ in 0..args.runs.max(1) {
            let (per_sec, exec) = measure(&mut instances, &batch, rows, args.duration)?;
            runs.push(per_sec);
            exec_ms.push(exec.as_secs_f64() * 1e3);
        }
        let row = Row {
            batch_size: rows,
            inferences_per_sec: median(&runs),
            execution_ms_p50: median(&exec_ms),
            runs,
        };
        if !args.json {
            println!(
                "batch {:>4}  {:>12.0} inf/s  exec p50 {:>9.3} ms  runs {}",
                row.batch_size,
                row.inferences_per_sec,
                row.execution_ms_p50,
                row.runs
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        results.push(row);
    }
    let best = results
        .iter()
        .max_by(|a, b| a.inferences_per_sec.total_cmp(&b.inferences_per_sec))
        .map(|r| Best {
            batch_size: r.batch_size,
            inferences_per_sec: r.inferences_per_sec,
        });
    Ok(Report {
        model: args.model.clone(),
        model_file: path,
        instances: args.instances.max(1),
        intra_op_threads: args.intra_op_threads,
        split: args.split,
        duration_secs: args.duration.as_secs_f64(),
        runs: args.runs.max(1),
        results,
        best,
    })
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; it means nothing here.
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    if !args.json {
        println!(
            "baseline: {} ({} instance(s) x {} intra-op thread(s){}), {:?} x {} run(s) per batch size",
            args.model,
            args.instances,
            args.intra_op_threads,
            if args.split {
                ", split into 1-row requests"
            } else {
                ""
            },
            args.duration,
            args.runs
        );
    }
    match run(&args) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("plain data serializes")
                );
            } else if let Some(best) = &report.best {
                println!(
                    "best: batch {} at {:.0} inf/s",
                    best.batch_size, best.inferences_per_sec
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("baseline: {e}");
            ExitCode::FAILURE
        }
    }
}
