//! The scheduler's plumbing on a fake executor: no ONNX Runtime, no clocks
//! standing in for synchronisation. The fake announces each execution and
//! waits for the test's permission to finish it, so the test decides what
//! is queued while a batch runs.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// A job: its name, and whether executing it panics.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job(&'static str);

/// Runs batches by echoing job names; reports each batch before running it
/// and then waits for a permit.
struct Fake {
    started: Sender<Vec<&'static str>>,
    permits: Receiver<()>,
    dropped: Arc<Mutex<bool>>,
    /// The chunk size of every execution.
    chunks: Arc<Mutex<Vec<usize>>>,
    /// How often it was told it is idle.
    idles: Arc<Mutex<usize>>,
    /// The model time it reports per row (none by default).
    per_row: Duration,
}

impl Executor for Fake {
    fn idle(&mut self) {
        *self.idles.lock().unwrap() += 1;
    }

    type Job = Job;
    type Output = String;

    fn execute(&mut self, jobs: &[&Job], max_rows: usize) -> Result<Executed<String>, ExecError> {
        self.chunks.lock().unwrap().push(max_rows);
        let names: Vec<&'static str> = jobs.iter().map(|j| j.0).collect();
        let _ = self.started.send(names.clone());
        let _ = self.permits.recv();
        if names.contains(&"panic") {
            panic!("the model blew up");
        }
        if names.contains(&"fail") {
            return Err(ExecError::request("ONNX Runtime said no"));
        }
        let rows = u32::try_from(names.len()).unwrap();
        Ok(Executed {
            outputs: names.iter().map(|n| n.to_uppercase()).collect(),
            times: ComputeTimes {
                infer: self.per_row * rows,
                ..ComputeTimes::default()
            },
            runs: 1,
        })
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        *self.dropped.lock().unwrap() = true;
    }
}

/// Everything the scheduler reported.
#[derive(Default)]
struct Recorder {
    pending: Mutex<Vec<usize>>,
    dequeued: Mutex<usize>,
    executed: Mutex<Vec<(usize, usize)>>,
    limits: Mutex<Vec<usize>>,
}

impl Observer for Recorder {
    fn pending(&self, waiting: usize) {
        self.pending.lock().unwrap().push(waiting);
    }
    fn dequeued(&self, _: Duration) {
        *self.dequeued.lock().unwrap() += 1;
    }
    fn executed(&self, requests: usize, rows: usize, _: usize, _: ComputeTimes) {
        self.executed.lock().unwrap().push((requests, rows));
    }
    fn batch_limit(&self, limit: usize) {
        self.limits.lock().unwrap().push(limit);
    }
}

struct Harness {
    scheduler: Option<Scheduler<Job, String>>,
    started: Receiver<Vec<&'static str>>,
    permits: Sender<()>,
    recorder: Arc<Recorder>,
    dropped: Arc<Mutex<bool>>,
    chunks: Arc<Mutex<Vec<usize>>>,
    idles: Arc<Mutex<usize>>,
}

const WAIT: Duration = Duration::from_secs(10);

impl Harness {
    fn new(max_batch_size: usize, capacity: usize) -> Harness {
        Harness::with_settings(max_batch_size, vec![capacity], None)
    }

    fn with_settings(
        max_batch_size: usize,
        capacities: Vec<usize>,
        auto: Option<AutoBatchSettings>,
    ) -> Harness {
        Harness::reporting(max_batch_size, capacities, auto, Duration::ZERO)
    }

    /// A harness whose executor reports `per_row` of model time per row.
    fn reporting(
        max_batch_size: usize,
        capacities: Vec<usize>,
        auto: Option<AutoBatchSettings>,
        per_row: Duration,
    ) -> Harness {
        let (started_tx, started) = channel();
        let (permits, permits_rx) = channel();
        let dropped = Arc::new(Mutex::new(false));
        let recorder = Arc::new(Recorder::default());
        let policy = BatchPolicy {
            max_batch_size,
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: Duration::ZERO,
        };
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let idles = Arc::new(Mutex::new(0));
        let fake = Fake {
            started: started_tx,
            permits: permits_rx,
            dropped: Arc::clone(&dropped),
            chunks: Arc::clone(&chunks),
            idles: Arc::clone(&idles),
            per_row,
        };
        let observer: Arc<dyn Observer> = recorder.clone();
        let settings = SchedulerSettings {
            policy,
            capacities,
            auto,
            inline_below: None,
            adaptive_instances: false,
        };
        let scheduler = Scheduler::start("test", vec![fake], settings, observer).unwrap();
        Harness {
            scheduler: Some(scheduler),
            started,
            permits,
            recorder,
            dropped,
            chunks,
            idles,
        }
    }

    fn submit(&self, name: &'static str) -> Result<Ticket<Job, String>, SchedulerError> {
        self.submit_keyed(name, 0)
    }

    fn submit_keyed(
        &self,
        name: &'static str,
        key: u64,
    ) -> Result<Ticket<Job, String>, SchedulerError> {
        self.submit_with(name, 1, key, 0)
    }

    fn submit_with(
        &self,
        name: &'static str,
        rows: usize,
        key: u64,
        level: usize,
    ) -> Result<Ticket<Job, String>, SchedulerError> {
        self.scheduler.as_ref().expect("not closed").submit(
            Job(name),
            rows,
            Box::new([key]),
            level,
            None,
        )
    }

    /// The next batch the worker started.
    fn next_started(&self) -> Vec<&'static str> {
        self.started
            .recv_timeout(WAIT)
            .expect("the worker starts a batch")
    }

    /// Lets the running batch finish.
    fn finish_one(&self) {
        self.permits.send(()).unwrap();
    }
}

#[tokio::test]
async fn a_worker_out_of_work_tells_its_executor_once_after_a_pause() {
    let h = Harness::new(4, 8);
    let idles = || *h.idles.lock().unwrap();
    std::thread::sleep(TIDY_AFTER * 2);
    assert_eq!(idles(), 0, "nothing ran: nothing to give back");
    let a = h.submit("a").unwrap();
    h.finish_one();
    assert_eq!(a.await.unwrap().output, "A");
    // Work that comes back at once finds the executor as it was.
    let b = h.submit("b").unwrap();
    h.finish_one();
    assert_eq!(b.await.unwrap().output, "B");
    assert_eq!(idles(), 0, "not between runs");
    let deadline = std::time::Instant::now() + WAIT;
    while idles() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(idles(), 1, "told once the pause is long enough");
    std::thread::sleep(TIDY_AFTER * 2);
    assert_eq!(idles(), 1, "once per spell of work");
    // The idle executor still serves.
    let c = h.submit("c").unwrap();
    h.finish_one();
    assert_eq!(c.await.unwrap().output, "C");
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_abandoned_requests_free_their_place() {
    let h = Harness::new(1, 2);
    let busy = h.submit("busy").unwrap();
    assert_eq!(h.next_started(), ["busy"]);
    // The worker is held inside "busy": two more fill the queue.
    let a = h.submit("a").unwrap();
    let b = h.submit("b").unwrap();
    assert_eq!(
        h.submit("c").err(),
        Some(SchedulerError::QueueFull { capacity: 2 })
    );
    // A caller that gives up no longer counts against the capacity.
    drop(a);
    let c = h.submit("c").unwrap();
    for _ in 0..3 {
        h.finish_one();
    }
    assert_eq!(busy.await.unwrap().output, "BUSY");
    assert_eq!(b.await.unwrap().output, "B");
    assert_eq!(c.await.unwrap().output, "C");
    // "a" never ran: three executions of one request each.
    assert_eq!(h.next_started(), ["b"]);
    assert_eq!(h.next_started(), ["c"]);
    assert_eq!(*h.recorder.executed.lock().unwrap(), [(1, 1); 3]);
    assert_eq!(*h.recorder.dequeued.lock().unwrap(), 3);
}

#[tokio::test]
async fn closing_runs_what_is_queued_then_drops_the_executor() {
    let mut h = Harness::new(8, 16);
    let first = h.submit("first").unwrap();
    assert_eq!(h.next_started(), ["first"]);
    let queued: Vec<_> = ["x", "y", "z"]
        .into_iter()
        .map(|n| h.submit(n).unwrap())
        .collect();
    // Close while three requests wait and one runs.
    h.scheduler = None;
    h.finish_one();
    h.finish_one();
    assert_eq!(first.await.unwrap().output, "FIRST");
    let mut answers = Vec::new();
    for ticket in queued {
        answers.push(ticket.await.unwrap().output);
    }
    assert_eq!(answers, ["X", "Y", "Z"]);
    assert_eq!(h.next_started(), ["x", "y", "z"], "one batch of three");
    // The worker ends once the queue is empty and drops its executor.
    assert!(
        h.started.recv_timeout(WAIT).is_err(),
        "no further executions after close"
    );
    assert!(*h.dropped.lock().unwrap());
}

#[tokio::test]
async fn a_panicking_execution_fails_its_batch_and_the_worker_goes_on() {
    let h = Harness::new(1, 8);
    let boom = h.submit("panic").unwrap();
    assert_eq!(h.next_started(), ["panic"]);
    h.finish_one();
    assert_eq!(
        boom.await.err(),
        Some(SchedulerError::Failed(ExecError::server(
            "the inference thread panicked"
        )))
    );
    let after = h.submit("after").unwrap();
    assert_eq!(h.next_started(), ["after"]);
    h.finish_one();
    assert_eq!(after.await.unwrap().output, "AFTER");
    // The failed execution is not counted as executed.
    assert_eq!(*h.recorder.executed.lock().unwrap(), [(1, 1)]);
}

#[tokio::test]
async fn a_failed_batch_runs_each_request_alone_so_only_the_failing_one_fails() {
    let h = Harness::new(4, 8);
    let busy = h.submit("busy").unwrap();
    assert_eq!(h.next_started(), ["busy"]);
    let ok = h.submit("ok").unwrap();
    let fail = h.submit("fail").unwrap();
    h.finish_one();
    assert_eq!(busy.await.unwrap().output, "BUSY");
    assert_eq!(h.next_started(), ["ok", "fail"]);
    h.finish_one();
    // The batch failed: each of its requests runs again, alone.
    assert_eq!(h.next_started(), ["ok"]);
    h.finish_one();
    assert_eq!(h.next_started(), ["fail"]);
    h.finish_one();
    let ok = ok.await.unwrap();
    assert_eq!((ok.output.as_str(), ok.batch_rows), ("OK", 1));
    let failed = fail.await.err();
    assert_eq!(
        failed,
        Some(SchedulerError::Failed(ExecError::request(
            "ONNX Runtime said no"
        )))
    );
    // Counted: the first execution and the one that succeeded alone.
    assert_eq!(*h.recorder.executed.lock().unwrap(), [(1, 1), (1, 1)]);
}

#[tokio::test]
async fn a_failed_execution_of_one_request_is_not_run_again() {
    let h = Harness::new(4, 8);
    let fail = h.submit("fail").unwrap();
    assert_eq!(h.next_started(), ["fail"]);
    h.finish_one();
    assert!(fail.await.is_err());
    assert!(
        h.started.recv_timeout(Duration::from_millis(300)).is_err(),
        "a request that failed alone is not run again"
    );
}

#[tokio::test]
async fn abandoned_requests_are_skipped_not_run() {
    let h = Harness::new(8, 8);
    let busy = h.submit("busy").unwrap();
    assert_eq!(h.next_started(), ["busy"]);
    let a = h.submit("a").unwrap();
    let gone = h.submit("gone").unwrap();
    let b = h.submit("b").unwrap();
    drop(gone);
    assert_eq!(h.recorder.pending.lock().unwrap().last(), Some(&2));
    h.finish_one();
    h.finish_one();
    assert_eq!(busy.await.unwrap().output, "BUSY");
    assert_eq!(h.next_started(), ["a", "b"]);
    assert_eq!(a.await.unwrap().output, "A");
    assert_eq!(b.await.unwrap().output, "B");
}

#[tokio::test]
async fn batches_form_as_the_policy_says() {
    let h = Harness::new(4, 64);
    let busy = h.submit("busy").unwrap();
    assert_eq!(h.next_started(), ["busy"]);
    // Six of one shape and one of another arrive while the model is busy.
    let names = ["r1", "r2", "r3", "other", "r4", "r5", "r6"];
    let tickets: Vec<_> = names
        .iter()
        .map(|&n| h.submit_keyed(n, u64::from(n == "other")).unwrap())
        .collect();
    for _ in 0..4 {
        h.finish_one();
    }
    assert_eq!(busy.await.unwrap().output, "BUSY");
    // Led by the oldest; same shape only; at most four rows.
    assert_eq!(h.next_started(), ["r1", "r2", "r3", "r4"]);
    assert_eq!(h.next_started(), ["other"]);
    assert_eq!(h.next_started(), ["r5", "r6"]);
    let mut batch_rows = Vec::new();
    for (ticket, name) in tickets.into_iter().zip(names) {
        let served = ticket.await.unwrap();
        assert_eq!(served.output, name.to_uppercase());
        assert_eq!(served.instance, 0, "the only worker");
        batch_rows.push(served.batch_rows);
    }
    // Each request learns the size of the batch it ran in.
    assert_eq!(batch_rows, [4, 4, 4, 1, 4, 2, 2]);
    assert_eq!(
        *h.recorder.executed.lock().unwrap(),
        [(1, 1), (4, 4), (1, 1), (2, 2)]
    );
}

#[tokio::test]
async fn high_priority_requests_overtake_a_backlog() {
    // Two levels, each with its own capacity.
    let h = Harness::with_settings(1, vec![4, 2], None);
    let busy = h.submit_with("busy", 1, 0, 1).unwrap();
    assert_eq!(h.next_started(), ["busy"]);
    let low: Vec<_> = ["low-1", "low-2"]
        .into_iter()
        .map(|n| h.submit_with(n, 1, 0, 1).unwrap())
        .collect();
    // The low level is full; the high one still takes requests.
    assert_eq!(
        h.submit_with("low-3", 1, 0, 1).err(),
        Some(SchedulerError::QueueFull { capacity: 2 })
    );
    let high = h.submit_with("high", 1, 0, 0).unwrap();
    for _ in 0..4 {
        h.finish_one();
    }
    busy.await.unwrap();
    assert_eq!(h.next_started(), ["high"], "the high priority goes first");
    assert_eq!(h.next_started(), ["low-1"]);
    assert_eq!(h.next_started(), ["low-2"]);
    high.await.unwrap();
    for ticket in low {
        ticket.await.unwrap();
    }
}

#[tokio::test]
async fn a_request_larger_than_a_batch_runs_alone_in_chunks_of_the_limit() {
    let h = Harness::new(4, 8);
    let busy = h.submit("busy").unwrap();
    assert_eq!(h.next_started(), ["busy"]);
    let small = h.submit_with("small", 1, 0, 0).unwrap();
    let big = h.submit_with("big", 10, 0, 0).unwrap();
    let after = h.submit_with("after", 1, 0, 0).unwrap();
    for _ in 0..4 {
        h.finish_one();
    }
    busy.await.unwrap();
    assert_eq!(
        h.next_started(),
        ["small"],
        "the big one does not join a batch"
    );
    assert_eq!(h.next_started(), ["big"], "it runs alone");
    assert_eq!(h.next_started(), ["after"]);
    small.await.unwrap();
    let served = big.await.unwrap();
    assert_eq!(served.batch_rows, 10);
    after.await.unwrap();
    // Every execution was told the limit, which the executor chunks by.
    assert!(h.chunks.lock().unwrap().iter().all(|&c| c == 4));
}

#[tokio::test]
async fn a_learned_limit_starts_at_one_and_is_reported() {
    let h = Harness::with_settings(
        1024,
        vec![8],
        Some(AutoBatchSettings {
            cap: 1024,
            latency_budget: Duration::from_millis(100),
        }),
    );
    assert_eq!(*h.recorder.limits.lock().unwrap(), [1]);
    assert_eq!(h.scheduler.as_ref().unwrap().batch_limit(), 1);
}

#[tokio::test]
async fn the_sizer_charges_an_execution_the_time_its_instance_was_taken() {
    // The executor reports model time in proportion to the rows, so by
    // that alone batching gains nothing; but each execution holds its
    // instance a millisecond longer than that, as a worker's hand-offs
    // and answers do for a small model. What the instance is taken for
    // is what batching amortises, and the limit grows.
    let auto = AutoBatchSettings {
        cap: 64,
        latency_budget: Duration::from_secs(1),
    };
    let h = Harness::reporting(64, vec![64], Some(auto), Duration::from_micros(10));
    let mut tickets = std::collections::VecDeque::new();
    for _ in 0..400 {
        // The load keeps 32 requests waiting: every limit up to 32 binds.
        while tickets.len() < 32 {
            tickets.push_back(h.submit("x").unwrap());
        }
        let batch = h.next_started();
        std::thread::sleep(Duration::from_millis(1));
        h.finish_one();
        for _ in 0..batch.len() {
            let answer: Served<String> = tickets.pop_front().unwrap().await.unwrap();
            assert_eq!(answer.output, "X");
        }
        if h.scheduler.as_ref().unwrap().batch_limit() >= 8 {
            return;
        }
    }
    panic!(
        "the limit stayed at {:?}",
        h.recorder.limits.lock().unwrap()
    );
}
