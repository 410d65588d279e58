//! Cumulative statistics of one model version, as Triton's ModelStatistics
//! reports them: request outcomes, time in each stage, and executions per
//! batch size. Lock-free counters on the request path; the per-batch-size
//! table takes a short lock once per execution.
//!
//! Each `record_*` call also updates the version's Prometheus metrics, so
//! ModelStatistics and `/metrics` are fed by the same events and agree.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxserve_proto::inference::{
    InferBatchStatistics, InferStatistics, ModelStatistics, StatisticDuration,
};

use tokio::time::Instant;
use tonic::Code;

use crate::metrics::{Protocol, VersionMetrics};
use crate::scheduler::{ComputeTimes, Observer};

/// A count and a total duration.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    /// Adds one occurrence that took `elapsed`.
    pub(crate) fn add(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Occurrences so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Total nanoseconds so far.
    pub(crate) fn ns(&self) -> u64 {
        self.ns.load(Ordering::Relaxed)
    }

    fn to_proto(&self) -> StatisticDuration {
        StatisticDuration {
            count: self.count(),
            ns: self.ns(),
        }
    }
}

#[derive(Debug, Default)]
struct BatchTally {
    input: Tally,
    infer: Tally,
    output: Tally,
}

/// One request being answered; see [`VersionStats::begin`]. It is counted
/// exactly once: as a success, as a failure with its code, or, when dropped
/// unfinished (the caller went away), as cancelled.
#[derive(Debug)]
#[must_use = "a dropped record counts its request as cancelled"]
pub(crate) struct RequestRecord<'a> {
    stats: &'a VersionStats,
    received: Instant,
    protocol: Protocol,
    done: bool,
}

impl RequestRecord<'_> {
    /// The request was answered successfully.
    pub(crate) fn succeeded(mut self) {
        self.done = true;
        let elapsed = self.received.elapsed();
        self.stats.success.add(elapsed);
        self.stats
            .metrics
            .requests(self.protocol, Code::Ok)
            .increment(1);
        self.stats.metrics.request_duration.record(elapsed);
    }

    /// The request failed with `code`.
    pub(crate) fn failed(mut self, code: Code) {
        self.done = true;
        self.stats
            .record_failure(self.received.elapsed(), self.protocol, code);
    }
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.stats
                .record_failure(self.received.elapsed(), self.protocol, Code::Cancelled);
        }
        self.stats.metrics.inflight.decrement(1.0);
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Statistics of one model version.
#[derive(Debug, Default)]
pub(crate) struct VersionStats {
    /// Requests answered successfully, with their time in the server.
    pub success: Tally,
    /// Requests that failed after reaching this version (cancelled ones
    /// included: Triton's statistics have no separate count for them; the
    /// metrics do, by code).
    pub fail: Tally,
    /// Time requests waited in the queue.
    pub queue: Tally,
    /// Per-request share of input preparation.
    pub compute_input: Tally,
    /// Per-request share of model execution.
    pub compute_infer: Tally,
    /// Per-request share of output extraction.
    pub compute_output: Tally,
    /// Requests answered from the response cache, with the look-up time.
    cache_hit: Tally,
    /// Requests the cache could not answer, with the look-up and insertion
    /// time.
    cache_miss: Tally,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    /// Requests begun and not yet finished.
    in_flight: AtomicUsize,
    last_inference_ms: AtomicU64,
    batches: Mutex<BTreeMap<u64, BatchTally>>,
    metrics: VersionMetrics,
}

impl VersionStats {
    /// Statistics that also feed `metrics`.
    pub(crate) fn new(metrics: VersionMetrics) -> VersionStats {
        VersionStats {
            metrics,
            ..VersionStats::default()
        }
    }

    /// Starts accounting for a request that arrived at `received` over
    /// `protocol`; it is in flight until the record is finished or dropped.
    pub(crate) fn begin(&self, received: Instant, protocol: Protocol) -> RequestRecord<'_> {
        self.metrics.inflight.increment(1.0);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestRecord {
            stats: self,
            received,
            protocol,
            done: false,
        }
    }

    /// Requests begun (over any transport) and not yet finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request answered from the response cache; the look-up took
    /// `elapsed`.
    pub(crate) fn record_cache_hit(&self, elapsed: Duration) {
        self.cache_hit.add(elapsed);
        self.metrics.cache_hits.increment(1);
    }

    /// A request the cache did not hold; looking up and storing its answer
    /// took `elapsed`.
    pub(crate) fn record_cache_miss(&self, elapsed: Duration) {
        self.cache_miss.add(elapsed);
        self.metrics.cache_misses.increment(1);
    }

    fn record_failure(&self, elapsed: Duration, protocol: Protocol, code: Code) {
        self.fail.add(elapsed);
        self.metrics.requests(protocol, code).increment(1);
        self.metrics.request_duration.record(elapsed);
    }

    /// Rows inferred successfully.
    pub(crate) fn inference_count(&self) -> u64 {
        self.inference_count.load(Ordering::Relaxed)
    }

    /// Model executions.
    pub(crate) fn execution_count(&self) -> u64 {
        self.execution_count.load(Ordering::Relaxed)
    }

    /// The protocol message for this version.
    pub(crate) fn to_proto(&self, name: &str, version: u64) -> ModelStatistics {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        ModelStatistics {
            name: name.to_string(),
            version: version.to_string(),
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count(),
            execution_count: self.execution_count(),
            inference_stats: Some(InferStatistics {
                success: Some(self.success.to_proto()),
                fail: Some(self.fail.to_proto()),
                queue: Some(self.queue.to_proto()),
                compute_input: Some(self.compute_input.to_proto()),
                compute_infer: Some(self.compute_infer.to_proto()),
                compute_output: Some(self.compute_output.to_proto()),
                cache_hit: Some(self.cache_hit.to_proto()),
                cache_miss: Some(self.cache_miss.to_proto()),
            }),
            batch_stats: batches
                .iter()
                .map(|(&batch_size, t)| InferBatchStatistics {
                    batch_size,
                    compute_input: Some(t.input.to_proto()),
                    compute_infer: Some(t.infer.to_proto()),
                    compute_output: Some(t.output.to_proto()),
                })
                .collect(),
        }
    }
}

impl Observer for VersionStats {
    fn batch_limit(&self, limit: usize) {
        self.metrics.batch_size_limit.set(limit as f64);
    }

    fn active_instances(&self, active: usize) {
        self.metrics.instances_active.set(active as f64);
    }

    fn pending(&self, waiting: usize) {
        self.metrics.pending.set(waiting as f64);
    }

    fn dequeued(&self, waited: Duration) {
        self.queue.add(waited);
        self.metrics.queue_duration.record(waited);
    }

    /// Like Triton, every request in the batch is charged the batch's full
    /// compute times.
    fn executed(&self, requests: usize, rows: usize, runs: usize, times: ComputeTimes) {
        for _ in 0..requests {
            self.compute_input.add(times.input);
            self.compute_infer.add(times.infer);
            self.compute_output.add(times.output);
            self.metrics.compute_input.record(times.input);
            self.metrics.compute_infer.record(times.infer);
            self.metrics.compute_output.record(times.output);
        }
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        // A request run in chunks counts one execution per chunk, of the
        // chunk's size.
        let runs = runs.max(1);
        let per_run = rows.div_ceil(runs);
        self.execution_count
            .fetch_add(runs as u64, Ordering::Relaxed);
        self.metrics.inferences.increment(rows as u64);
        self.metrics.executions.increment(runs as u64);
        for _ in 0..runs {
            self.metrics.batch_size.record(per_run as f64);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let tally = batches.entry(per_run as u64).or_default();
        tally.input.add(times.input);
        tally.infer.add(times.infer);
        tally.output.add(times.output);
    }
}
