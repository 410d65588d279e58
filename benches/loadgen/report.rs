//! What a load run measured and how it is reported: per-run statistics,
//! the latency/failure recorder each worker keeps, and process CPU and
//! memory sampling from /proc.

use std::collections::BTreeMap;
use std::time::Instant;

use oxserve_client::pb;
use serde::Serialize;

use crate::common::rss_kib;

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RunStats {
    pub(crate) requests_ok: u64,
    pub(crate) requests_failed: u64,
    /// Failures by gRPC code (`NO_STATUS` for client-side failures).
    pub(crate) errors: BTreeMap<String, u64>,
    /// One message per failing code, as a clue.
    pub(crate) error_samples: BTreeMap<String, String>,
    pub(crate) elapsed_secs: f64,
    pub(crate) requests_per_sec: f64,
    /// Requests per second times rows per request.
    pub(crate) inferences_per_sec: f64,
    pub(crate) latency_ms_mean: f64,
    pub(crate) latency_ms_p50: f64,
    pub(crate) latency_ms_p90: f64,
    pub(crate) latency_ms_p99: f64,
    pub(crate) latency_ms_max: f64,
    /// CPU time of this process per successful request (includes an
    /// in-process server with --serve).
    pub(crate) client_cpu_us_per_request: f64,
    /// CPU time of --server-pid per successful request.
    pub(crate) server_cpu_us_per_request: Option<f64>,
    /// Resident memory of the server (--server-pid, or this process with
    /// --serve) before the run, at most during it, and after it.
    pub(crate) server_rss_mib_before: Option<f64>,
    pub(crate) server_rss_mib_peak: Option<f64>,
    pub(crate) server_rss_mib_after: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) median_requests_per_sec: f64,
    pub(crate) median_inferences_per_sec: f64,
    pub(crate) median_latency_ms_p50: f64,
    pub(crate) median_latency_ms_p90: f64,
    pub(crate) median_latency_ms_p99: f64,
    pub(crate) total_failed: u64,
}

/// Latencies and failures of one worker (or of the open loop's tasks).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) latencies_ns: Vec<u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) samples: BTreeMap<String, String>,
}

impl Recorder {
    pub(crate) fn record(
        &mut self,
        started: Instant,
        result: &oxserve_client::Result<pb::ModelInferResponse>,
    ) {
        match result {
            Ok(_) => self.latencies_ns.push(started.elapsed().as_nanos() as u64),
            Err(e) => {
                let code = e.code().map_or_else(|| "NO_STATUS".to_string(), code_name);
                *self.errors.entry(code.clone()).or_default() += 1;
                self.samples.entry(code).or_insert_with(|| e.to_string());
            }
        }
    }

    pub(crate) fn merge(&mut self, other: Recorder) {
        self.latencies_ns.extend(other.latencies_ns);
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (code, s) in other.samples {
            self.samples.entry(code).or_insert(s);
        }
    }
}

/// `DeadlineExceeded` → `DEADLINE_EXCEEDED`, as gRPC spells codes.
pub(crate) fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// User plus system CPU time of `pid` (or this process), from
/// `/proc/<pid>/stat`, assuming the usual 100 clock ticks per second.
pub(crate) fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// `pid` and, with `tree`, every live process descended from it (Triton's
/// backend stubs, MLServer's inference workers), from `/proc`.
pub(crate) fn process_tree(pid: u32, tree: bool) -> Vec<u32> {
    let mut pids = vec![pid];
    if !tree {
        return pids;
    }
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // The field after the state, counted from the command's ')'.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 2..))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((child, ppid));
            }
        }
    }
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        pids.extend(
            parents
                .iter()
                .filter(|&&(child, ppid)| ppid == parent && child != pid)
                .map(|&(child, _)| child),
        );
        i += 1;
    }
    pids
}

/// CPU seconds of the processes `pids` summed; `None` once the first is
/// gone.
pub(crate) fn sum_cpu_secs(pids: &[u32]) -> Option<f64> {
    let (&first, rest) = pids.split_first()?;
    let rest: f64 = rest.iter().filter_map(|&p| cpu_secs(Some(p))).sum();
    Some(cpu_secs(Some(first))? + rest)
}

/// Resident memory in KiB of the processes `pids`, summed (pages they
/// share count once per process); `None` once the first is gone.
pub(crate) fn sum_rss_kib(pids: &[u32]) -> Option<u64> {
    let (&first, rest) = pids.split_first()?;
    let rest: u64 = rest.iter().filter_map(|&p| rss_kib(Some(p))).sum();
    Some(rss_kib(Some(first))? + rest)
}

pub(crate) fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

pub(crate) fn print_run(index: usize, r: &RunStats) {
    let mut line = format!(
        "run {index}: {:.0} req/s {:.0} inf/s | latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} | ok {} failed {} | cpu us/req client {:.1}",
        r.requests_per_sec,
        r.inferences_per_sec,
        r.latency_ms_p50,
        r.latency_ms_p90,
        r.latency_ms_p99,
        r.latency_ms_max,
        r.requests_ok,
        r.requests_failed,
        r.client_cpu_us_per_request,
    );
    if let Some(s) = r.server_cpu_us_per_request {
        line += &format!(" server {s:.1}");
    }
    if let (Some(b), Some(p), Some(a)) = (
        r.server_rss_mib_before,
        r.server_rss_mib_peak,
        r.server_rss_mib_after,
    ) {
        line += &format!(" | rss MiB {b:.1} peak {p:.1} after {a:.1}");
    }
    println!("{line}");
    for (code, n) in &r.errors {
        println!(
            "  {code}: {n} (e.g. {})",
            r.error_samples.get(code).map_or("", String::as_str)
        );
    }
}
