//! The queue in front of one model version, and the worker threads (one per
//! instance) that form batches from it and run them.
//!
//! The async side never blocks: [`Scheduler::submit`] queues a request at
//! once, or refuses it when the queue is full, and returns a [`Ticket`] to
//! await. Workers wait on a condition variable; an idle worker asks the
//! [`BatchPolicy`] what to run, takes those requests out of the queue,
//! hands them to its [`Executor`] as one execution, then answers each on its
//! own channel. A caller that gives up (cancelled, or its deadline passed)
//! drops its ticket, which takes its request out of the queue at once: it
//! is never run and no longer counts against the queue's capacity.

mod autobatch;
mod executor;
mod policy;
mod queue;

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread;

use tokio::sync::oneshot;
use tokio::time::Instant;

pub use autobatch::{AutoBatch, AutoBatchSettings};
pub use executor::{ComputeTimes, ExecError, Executed, Executor, Observer, Served, Unobserved};
pub use policy::{BatchPolicy, Decision, Waiting};
pub use queue::{Queue, Queued, SlotId};

/// Why a request was not queued, or not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// The queue (of the request's priority level) holds its maximum
    /// number of requests.
    #[error("the queue holds its maximum of {capacity} requests")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The scheduler was closed before the request ran.
    #[error("the model version is shutting down")]
    Stopped,
    /// The execution that carried the request failed.
    #[error(transparent)]
    Failed(#[from] ExecError),
}

type Reply<O> = Result<Served<O>, ExecError>;

/// A queued job with the channel its answer goes back on.
struct Job<J, O> {
    job: J,
    reply: oneshot::Sender<Reply<O>>,
}

struct State<J, O> {
    queue: Queue<Job<J, O>>,
    closed: bool,
    /// The learned batch limit, when the server picks the batch size.
    sizer: Option<AutoBatch>,
}

impl<J, O> State<J, O> {
    fn limit(&self, policy: &BatchPolicy) -> usize {
        self.sizer
            .as_ref()
            .map_or(policy.max_batch_size, AutoBatch::limit)
    }

    /// Rows per execution for a request larger than a batch.
    fn chunk(&self, policy: &BatchPolicy) -> usize {
        match (&self.sizer, policy.max_batch_size) {
            (_, 0) => usize::MAX,
            (Some(sizer), _) => sizer.chunk_rows(),
            (None, max) => max,
        }
    }
}

/// How a scheduler forms batches and bounds its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// The batching policy (its `max_batch_size` is the cap when `auto` is
    /// set).
    pub policy: BatchPolicy,
    /// Requests that may wait, per priority level (highest first); at
    /// least one level.
    pub capacities: Vec<usize>,
    /// Learn the batch limit from execution times, up to the policy's
    /// `max_batch_size`.
    pub auto: Option<AutoBatchSettings>,
}

struct Shared<J, O> {
    state: Mutex<State<J, O>>,
    wake: Condvar,
    policy: BatchPolicy,
    capacities: Vec<usize>,
    observer: Arc<dyn Observer>,
}

impl<J, O> Shared<J, O> {
    fn lock(&self) -> MutexGuard<'_, State<J, O>> {
        // Nothing panics while holding the lock (executions run outside it),
        // so a poisoned lock still guards a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The queue and workers of one model version. Dropping it lets the
/// workers finish what is queued, then stop and drop their executors.
pub struct Scheduler<J, O> {
    shared: Arc<Shared<J, O>>,
}

impl<J, O> std::fmt::Debug for Scheduler<J, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("policy", &self.shared.policy)
            .field("capacities", &self.shared.capacities)
            .finish()
    }
}

impl<J: Send + 'static, O: Send + 'static> Scheduler<J, O> {
    /// Starts one worker thread per executor, sharing a queue of at most
    /// `capacity` waiting requests. Threads are named `{name}-{index}`.
    pub fn start<E>(
        name: &str,
        executors: Vec<E>,
        settings: SchedulerSettings,
        observer: Arc<dyn Observer>,
    ) -> std::io::Result<Scheduler<J, O>>
    where
        E: Executor<Job = J, Output = O>,
    {
        let mut capacities = settings.capacities;
        if capacities.is_empty() {
            capacities.push(usize::MAX);
        }
        let sizer = settings.auto.map(AutoBatch::new);
        observer.batch_limit(
            sizer
                .as_ref()
                .map_or(settings.policy.max_batch_size, AutoBatch::limit),
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Queue::with_levels(capacities.len()),
                closed: false,
                sizer,
            }),
            wake: Condvar::new(),
            policy: settings.policy,
            capacities,
            observer,
        });
        let scheduler = Scheduler {
            shared: Arc::clone(&shared),
        };
        for (index, executor) in executors.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            // On error the scheduler is dropped, which stops the workers
            // already started once their (empty) queue is seen closed.
            thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || work(&shared, executor, index))?;
        }
        Ok(scheduler)
    }

    /// Queues `job` at priority `level` (0 = the highest; clamped to the
    /// lowest), which carries `rows` rows and batches only with jobs of the
    /// same `key`; from `delayed_after` on it yields to requests that have
    /// not timed out (Triton's DELAY). The ticket resolves to its output
    /// once it has run.
    pub fn submit(
        &self,
        job: J,
        rows: usize,
        key: Box<[u64]>,
        level: usize,
        delayed_after: Option<Instant>,
    ) -> Result<Ticket<J, O>, SchedulerError> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            rows,
            key,
            enqueued: Instant::now(),
            delayed_after,
        };
        let level = level.min(self.shared.capacities.len() - 1);
        let capacity = self.shared.capacities[level];
        let (slot, pending) = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(SchedulerError::Stopped);
            }
            if state.queue.len_at(level) >= capacity {
                return Err(SchedulerError::QueueFull { capacity });
            }
            let slot = state.queue.push(level, waiting, Job { job, reply });
            (slot, state.queue.len())
        };
        self.shared.observer.pending(pending);
        self.shared.wake.notify_one();
        Ok(Ticket {
            shared: Arc::clone(&self.shared),
            slot: Some(slot),
            answer,
        })
    }
}

impl<J, O> Scheduler<J, O> {
    /// The batch limit batches are formed with now: the policy's, or the
    /// learned one.
    pub fn batch_limit(&self) -> usize {
        self.shared.lock().limit(&self.shared.policy)
    }
}

impl<J, O> Drop for Scheduler<J, O> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// A queued request's claim on its answer. Dropping it before the answer
/// arrives abandons the request: still waiting, it leaves the queue at once
/// and is never run; already running, its answer is discarded.
pub struct Ticket<J, O> {
    shared: Arc<Shared<J, O>>,
    slot: Option<SlotId>,
    answer: oneshot::Receiver<Reply<O>>,
}

impl<J, O> Future for Ticket<J, O> {
    type Output = Result<Served<O>, SchedulerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = std::task::ready!(Pin::new(&mut self.answer).poll(cx));
        // Answered (or its worker stopped): nothing left to abandon.
        self.slot = None;
        Poll::Ready(match answer {
            Ok(reply) => reply.map_err(SchedulerError::Failed),
            // A worker always answers what it takes, so a dropped sender
            // means the workers stopped before reaching this request.
            Err(_) => Err(SchedulerError::Stopped),
        })
    }
}

impl<J, O> Drop for Ticket<J, O> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let (removed, pending) = {
            let mut state = self.shared.lock();
            let removed = state.queue.remove(slot);
            (removed, state.queue.len())
        };
        if removed.is_some() {
            self.shared.observer.pending(pending);
        }
        // The request's data is dropped here, outside the lock.
        drop(removed);
    }
}

/// Requests taken out of the queue to run together.
type Batch<J, O> = Vec<queue::Queued<Job<J, O>>>;

/// Waits for the next batch; `None` once the scheduler is dropped and the
/// queue is empty. Returns the batch and the rows per execution for a
/// request larger than a batch.
fn next_batch<J, O>(shared: &Shared<J, O>) -> Option<(Batch<J, O>, usize)> {
    let mut state = shared.lock();
    loop {
        if state.queue.is_empty() && state.closed {
            return None;
        }
        let now = Instant::now();
        let limit = state.limit(&shared.policy);
        match shared
            .policy
            .decide_within(state.queue.waiting(), limit, now)
        {
            Decision::Run(ids) => {
                let batch = state.queue.take(&ids);
                let pending = state.queue.len();
                let chunk = state.chunk(&shared.policy);
                drop(state);
                shared.observer.pending(pending);
                return Some((batch, chunk));
            }
            Decision::WaitUntil(deadline) => {
                let timeout = deadline.saturating_duration_since(now);
                state = shared
                    .wake
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            Decision::Idle => {
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

fn work<E: Executor>(shared: &Shared<E::Job, E::Output>, mut executor: E, instance: usize) {
    while let Some((batch, chunk)) = next_batch(shared) {
        let started = Instant::now();
        let mut rows = 0;
        let mut jobs = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for queued in batch {
            let waited = started.saturating_duration_since(queued.waiting.enqueued);
            shared.observer.dequeued(waited);
            rows += queued.waiting.rows;
            jobs.push(queued.job.job);
            replies.push((queued.job.reply, waited));
        }
        let refs: Vec<&E::Job> = jobs.iter().collect();
        // A panic inside an execution must cost this batch, not the model:
        // the worker goes on with the next one.
        // A request larger than a batch runs alone, in chunks.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| executor.execute(&refs, chunk)))
            .unwrap_or_else(|_| Err(ExecError("the inference thread panicked".into())));
        let result = result.and_then(|done| {
            if done.outputs.len() == replies.len() {
                Ok(done)
            } else {
                Err(ExecError(format!(
                    "the execution returned {} outputs for {} requests",
                    done.outputs.len(),
                    replies.len()
                )))
            }
        });
        match result {
            Ok(done) => {
                let runs = done.runs.max(1);
                shared
                    .observer
                    .executed(replies.len(), rows, runs, done.times);
                learn(shared, rows, runs, done.times);
                for ((reply, queued), output) in replies.into_iter().zip(done.outputs) {
                    // The caller may have gone meanwhile; nobody is left to tell.
                    let _ = reply.send(Ok(Served {
                        output,
                        queued,
                        times: done.times,
                        batch_rows: rows,
                        instance,
                    }));
                }
            }
            Err(error) => {
                for (reply, _) in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Feeds an execution's time to the batch sizer, if the server picks the
/// batch size.
fn learn<J, O>(shared: &Shared<J, O>, rows: usize, runs: usize, times: ComputeTimes) {
    let changed = {
        let mut state = shared.lock();
        let Some(sizer) = state.sizer.as_mut() else {
            return;
        };
        // A chunked request: each run is one execution of its share.
        let total = times.input + times.infer + times.output;
        let per_run = total / u32::try_from(runs).unwrap_or(u32::MAX);
        let mut changed = None;
        for _ in 0..runs.min(64) {
            changed = sizer.observe(rows.div_ceil(runs), per_run).or(changed);
        }
        changed
    };
    if let Some(limit) = changed {
        shared.observer.batch_limit(limit);
        // A larger limit may make a waiting batch complete.
        shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests;
