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

pub use executor::{ComputeTimes, ExecError, Executed, Executor, Observer, Served, Unobserved};
pub use policy::{BatchPolicy, Decision, Waiting};
pub use queue::{Queue, Queued, SlotId};

/// Why a request was not queued, or not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// The queue holds its maximum number of requests.
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
}

struct Shared<J, O> {
    state: Mutex<State<J, O>>,
    wake: Condvar,
    policy: BatchPolicy,
    capacity: usize,
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
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl<J: Send + 'static, O: Send + 'static> Scheduler<J, O> {
    /// Starts one worker thread per executor, sharing a queue of at most
    /// `capacity` waiting requests. Threads are named `{name}-{index}`.
    pub fn start<E>(
        name: &str,
        executors: Vec<E>,
        policy: BatchPolicy,
        capacity: usize,
        observer: Arc<dyn Observer>,
    ) -> std::io::Result<Scheduler<J, O>>
    where
        E: Executor<Job = J, Output = O>,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Queue::default(),
                closed: false,
            }),
            wake: Condvar::new(),
            policy,
            capacity,
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

    /// Queues `job`, which carries `rows` rows and batches only with jobs of
    /// the same `key`; the ticket resolves to its output once it has run.
    pub fn submit(
        &self,
        job: J,
        rows: usize,
        key: Box<[u64]>,
    ) -> Result<Ticket<J, O>, SchedulerError> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            rows,
            key,
            enqueued: Instant::now(),
        };
        let (slot, pending) = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(SchedulerError::Stopped);
            }
            if state.queue.len() >= self.shared.capacity {
                return Err(SchedulerError::QueueFull {
                    capacity: self.shared.capacity,
                });
            }
            let slot = state.queue.push(waiting, Job { job, reply });
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

/// Waits for the next batch; `None` once the scheduler is dropped and the
/// queue is empty.
fn next_batch<J, O>(shared: &Shared<J, O>) -> Option<Vec<queue::Queued<Job<J, O>>>> {
    let mut state = shared.lock();
    loop {
        if state.queue.is_empty() && state.closed {
            return None;
        }
        let now = Instant::now();
        match shared.policy.decide(state.queue.waiting(), now) {
            Decision::Run(ids) => {
                let batch = state.queue.take(&ids);
                let pending = state.queue.len();
                drop(state);
                shared.observer.pending(pending);
                return Some(batch);
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
    while let Some(batch) = next_batch(shared) {
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
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| executor.execute(&refs)))
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
                shared.observer.executed(replies.len(), rows, done.times);
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

#[cfg(test)]
mod tests;
