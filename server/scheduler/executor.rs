//! The seam between the scheduler and whatever runs its batches: the
//! [`Executor`] a worker thread drives, and the [`Observer`] it reports to.
//!
//! The scheduler knows nothing of ONNX Runtime or of statistics; the
//! backend implements [`Executor`] and the statistics implement
//! [`Observer`], so the queue's plumbing is tested with fakes of both.

use std::time::Duration;

/// Runs batches of jobs on a worker thread it is moved to.
pub trait Executor: Send + 'static {
    /// What one request asks for.
    type Job: Send + 'static;
    /// What one request gets back.
    type Output: Send + 'static;

    /// Runs `jobs` as one execution and returns one output per job, in
    /// order. A single job of more rows than `max_rows` (larger than any
    /// batch) is run in chunks of at most `max_rows` rows and its outputs
    /// joined. Blocking: it runs on a thread of the scheduler's own.
    fn execute(
        &mut self,
        jobs: &[&Self::Job],
        max_rows: usize,
    ) -> Result<Executed<Self::Output>, ExecError>;

    /// Called when the worker runs out of work after running batches,
    /// before it waits: the moment to give back memory the last batches
    /// needed and the next ones may not.
    fn idle(&mut self) {}
}

/// The outcome of one execution.
#[derive(Debug)]
pub struct Executed<O> {
    /// One output per job, in the order of the jobs.
    pub outputs: Vec<O>,
    /// Time spent in each stage (all runs together).
    pub times: ComputeTimes,
    /// Model runs it took: 1, or the chunks of a request larger than a
    /// batch.
    pub runs: usize,
}

/// Time spent in the three compute stages of one execution, as Triton's
/// statistics split it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ComputeTimes {
    /// Building the model's inputs (the copy into the batch).
    pub input: Duration,
    /// Running the model.
    pub infer: Duration,
    /// Splitting and copying outputs into responses.
    pub output: Duration,
}

/// What one request gets back from its execution: its output, and where
/// its time went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served<O> {
    /// The request's output.
    pub output: O,
    /// How long it waited in the queue.
    pub queued: Duration,
    /// The compute times of the execution it ran in (shared by the batch).
    pub times: ComputeTimes,
    /// Rows in that execution (its batch size).
    pub batch_rows: usize,
    /// Which of the version's instances (worker threads) ran it.
    pub instance: usize,
}

/// Why an execution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExecError {
    message: String,
    caused_by_request: bool,
}

impl ExecError {
    /// The server or the model failed: nothing the caller can mend.
    pub fn server(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            caused_by_request: false,
        }
    }

    /// The model rejected a value of the request that no check before the
    /// run can see (an index out of a table's range, say).
    pub fn request(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            caused_by_request: true,
        }
    }

    /// Whether the request's data, not the server, caused it.
    pub fn caused_by_request(&self) -> bool {
        self.caused_by_request
    }
}

/// What a scheduler reports as it works. Calls are made with no lock held.
pub trait Observer: Send + Sync + 'static {
    /// Requests now waiting in the queue.
    fn pending(&self, waiting: usize);
    /// A request leaves the queue for execution after waiting `waited`.
    fn dequeued(&self, waited: Duration);
    /// One execution of `requests` requests carrying `rows` rows succeeded,
    /// in `runs` model runs (more than one for a request run in chunks).
    fn executed(&self, requests: usize, rows: usize, runs: usize, times: ComputeTimes);
    /// The batch limit changed (the server picks the batch size).
    fn batch_limit(&self, _limit: usize) {}
    /// The number of instances taking work changed (and once at start).
    fn active_instances(&self, _active: usize) {}
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unobserved;

impl Observer for Unobserved {
    fn pending(&self, _: usize) {}
    fn dequeued(&self, _: Duration) {}
    fn executed(&self, _: usize, _: usize, _: usize, _: ComputeTimes) {}
}
