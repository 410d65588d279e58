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
//!
//! A short model need not pay for two thread hand-offs per request: when a
//! request is the only one in flight for its version, finds the queue empty
//! and an instance idle, the policy would run it alone at once anyway, and
//! the model's executions take less than
//! [`SchedulerSettings::inline_below`], [`Scheduler::submit_alone`] runs it
//! on the caller's thread with that instance (`run.rs`).

mod autobatch;
mod executor;
mod policy;
mod queue;
mod run;
mod spread;
mod worker;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

pub use autobatch::{AutoBatch, AutoBatchSettings};
pub use executor::{ComputeTimes, ExecError, Executed, Executor, Observer, Served, Unobserved};
pub use policy::{BatchPolicy, Decision, Waiting};
pub use queue::{Queue, Queued, SlotId};
use spread::Spread;
#[cfg(test)]
use worker::TIDY_AFTER;

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
    /// Each instance's state, by index.
    instances: Vec<InstanceState>,
    /// How many instances take work (the first ones).
    spread: Spread,
    /// Workers waiting on `Shared::wake`. Counted under the lock, so a
    /// submitter that sees none knows every worker will look at the queue
    /// before it sleeps, and skips the wake-up (a system call even when
    /// nobody waits).
    sleeping: usize,
}

/// Whether an instance runs an execution, and since when it has not.
#[derive(Debug, Clone, Copy)]
struct InstanceState {
    /// Running an execution: its worker's, or one a caller runs inline.
    busy: bool,
    /// When it last finished an execution.
    finished: Instant,
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
    /// Run a request on the submitting thread, skipping the queue and the
    /// worker thread, when it finds the queue empty and an instance idle
    /// and the model's executions have lately taken less than this. `None`
    /// always queues. The submitting thread is an async runtime's, so this
    /// stays well below a millisecond.
    pub inline_below: Option<Duration>,
    /// Start work on one instance and let more take it only while the
    /// active ones are saturated (`spread.rs`), for instances the server
    /// chose; otherwise every instance takes work.
    pub adaptive_instances: bool,
}

/// How many of its recent executions' time an instance must have been idle
/// for a request to run inline on it.
const IDLE_EXECUTIONS: u32 = 2;

/// One instance's executor, shared by its worker thread and callers that
/// run inline; taken (and dropped) by the worker when it stops.
type Instance<J, O> = Mutex<Option<Box<dyn Executor<Job = J, Output = O>>>>;

struct Shared<J, O> {
    state: Mutex<State<J, O>>,
    wake: Condvar,
    /// Where the workers of instances that take no work wait.
    park: Condvar,
    policy: BatchPolicy,
    capacities: Vec<usize>,
    observer: Arc<dyn Observer>,
    instances: Box<[Instance<J, O>]>,
    inline_below: Option<Duration>,
    /// A moving average of one execution's time (ns), 0 before the first.
    execution_ns: AtomicU64,
}

impl<J, O> Shared<J, O> {
    fn lock(&self) -> MutexGuard<'_, State<J, O>> {
        // Nothing panics while holding the lock (executions run outside it),
        // so a poisoned lock still guards a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recent execution time, if executions are short enough to run
    /// on a caller's thread.
    fn inline_worthy(&self) -> Option<Duration> {
        let below = self.inline_below?;
        let ns = self.execution_ns.load(Ordering::Relaxed);
        (ns != 0 && u128::from(ns) < below.as_nanos()).then(|| Duration::from_nanos(ns))
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
        let count = executors.len();
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
        let spread = Spread::new(count, settings.adaptive_instances, Instant::now());
        observer.active_instances(spread.active());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Queue::with_levels(capacities.len()),
                closed: false,
                sizer,
                instances: vec![
                    InstanceState {
                        busy: false,
                        finished: Instant::now(),
                    };
                    count
                ],
                spread,
                sleeping: 0,
            }),
            wake: Condvar::new(),
            park: Condvar::new(),
            policy: settings.policy,
            capacities,
            observer,
            instances: executors
                .into_iter()
                .map(|e| {
                    let boxed: Box<dyn Executor<Job = J, Output = O>> = Box::new(e);
                    Mutex::new(Some(boxed))
                })
                .collect(),
            inline_below: settings.inline_below,
            execution_ns: AtomicU64::new(0),
        });
        let scheduler = Scheduler {
            shared: Arc::clone(&shared),
        };
        for index in 0..count {
            let shared = Arc::clone(&shared);
            // On error the scheduler is dropped, which stops the workers
            // already started once their (empty) queue is seen closed.
            thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || worker::work(&shared, index))?;
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
        self.enqueue(job, rows, key, level, delayed_after, false)
    }

    /// [`Scheduler::submit`] for a caller that knows no other request for
    /// this model version is in flight anywhere in the server (decoding
    /// included): then it may run at once on this thread (see the module
    /// documentation). Under load, requests always go through the queue,
    /// so they batch and decoding keeps the async runtime's threads.
    pub fn submit_alone(
        &self,
        job: J,
        rows: usize,
        key: Box<[u64]>,
        level: usize,
        delayed_after: Option<Instant>,
    ) -> Result<Ticket<J, O>, SchedulerError> {
        self.enqueue(job, rows, key, level, delayed_after, true)
    }

    fn enqueue(
        &self,
        job: J,
        rows: usize,
        key: Box<[u64]>,
        level: usize,
        delayed_after: Option<Instant>,
        alone: bool,
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
        let (slot, pending, wake) = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(SchedulerError::Stopped);
            }
            if state.queue.len_at(level) >= capacity {
                return Err(SchedulerError::QueueFull { capacity });
            }
            let slot = state.queue.push(level, waiting, Job { job, reply });
            if let Some((instance, batch, chunk)) =
                alone.then(|| self.inline(&mut state, slot)).flatten()
            {
                drop(state);
                self.run_inline(instance, batch, chunk);
                return Ok(Ticket {
                    shared: Arc::clone(&self.shared),
                    slot: None,
                    answer,
                });
            }
            // With several instances, one may be running a caller's
            // request inline: its worker must not be the only one woken.
            let wake = match state.sleeping {
                0 => Wake::None,
                _ if state.instances.len() > 1 && state.instances.iter().any(|i| i.busy) => {
                    Wake::All
                }
                _ => Wake::One,
            };
            (slot, state.queue.len(), wake)
        };
        self.shared.observer.pending(pending);
        match wake {
            Wake::None => {}
            Wake::One => self.shared.wake.notify_one(),
            Wake::All => self.shared.wake.notify_all(),
        }
        Ok(Ticket {
            shared: Arc::clone(&self.shared),
            slot: Some(slot),
            answer,
        })
    }

    /// Takes the request just queued at `slot` to run on this thread, with
    /// the instance it claims, when it is alone in the queue, an instance
    /// is idle, the policy would run it now, and executions are short.
    fn inline(&self, state: &mut State<J, O>, slot: SlotId) -> Option<(usize, Batch<J, O>, usize)> {
        if state.queue.len() != 1 {
            return None;
        }
        let execution = self.shared.inline_worthy()?;
        let now = Instant::now();
        // An instance idle for several executions' time: the model is
        // lightly used, so this thread is not needed for other requests
        // (under load, gaps between executions are short).
        let active = state.spread.active();
        let instance = state.instances[..active].iter().position(|i| {
            !i.busy && now.saturating_duration_since(i.finished) >= execution * IDLE_EXECUTIONS
        })?;
        let limit = state.limit(&self.shared.policy);
        match self
            .shared
            .policy
            .decide_within(state.queue.waiting(), limit, now)
        {
            Decision::Run(ids) if ids == [slot] => {
                state.instances[instance].busy = true;
                let chunk = state.chunk(&self.shared.policy);
                Some((instance, state.queue.take(&ids), chunk))
            }
            Decision::Run(_) | Decision::WaitUntil(_) | Decision::Idle => None,
        }
    }

    /// Runs `batch` with `instance` on this thread, then frees the
    /// instance for its worker.
    fn run_inline(&self, instance: usize, batch: Batch<J, O>, chunk: usize) {
        let shared = &*self.shared;
        {
            let mut executor = shared.instances[instance]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match executor.as_mut() {
                Some(executor) => run::run_batch(shared, executor.as_mut(), instance, batch, chunk),
                // Its worker stopped (the scheduler is closing): the
                // request is answered as stopped when its reply drops.
                None => drop(batch),
            }
        }
        let waiting = {
            let mut state = shared.lock();
            state.instances[instance] = InstanceState {
                busy: false,
                finished: Instant::now(),
            };
            !state.queue.is_empty() && state.sleeping > 0
        };
        if waiting {
            // The instance's worker may have passed over requests that
            // arrived while this ran.
            shared.wake.notify_all();
        }
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
        // Every worker helps drain the queue, then stops.
        self.shared.park.notify_all();
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

/// Which sleeping workers a submitter wakes.
enum Wake {
    None,
    One,
    All,
}

/// Requests taken out of the queue to run together.
type Batch<J, O> = Vec<queue::Queued<Job<J, O>>>;

#[cfg(test)]
mod inline_tests;
#[cfg(test)]
mod tests;
