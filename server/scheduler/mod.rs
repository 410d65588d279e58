//! The queue in front of one model version, and the worker threads (one per
//! instance) that form batches from it and run them.
//!
//! The async side never blocks: [`Scheduler::submit`] queues a request at
//! once or refuses it when the queue is full. Workers wait on a condition
//! variable; an idle worker asks the [`BatchPolicy`] what to run, takes
//! those requests out of the queue and runs them as one ONNX Runtime
//! execution, then answers each on its own channel. A request whose caller
//! has gone (cancelled, or its deadline passed) is dropped, not run.

mod policy;

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use tokio::sync::oneshot;
use tokio::time::Instant;

pub use policy::{BatchPolicy, Decision, Waiting};

use crate::backend::{BackendError, Instance};
use crate::stats::VersionStats;
use crate::tensor::{DecodedRequest, Tensor};

/// The outcome of one request, as a worker reports it.
pub type Reply = Result<Vec<Tensor>, BackendError>;

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds its maximum number of requests.
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The model version is being unloaded.
    Stopped,
}

struct Entry {
    waiting: Waiting,
    request: DecodedRequest,
    reply: oneshot::Sender<Reply>,
}

impl Borrow<Waiting> for Entry {
    fn borrow(&self) -> &Waiting {
        &self.waiting
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Entry>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    policy: BatchPolicy,
    capacity: usize,
    stats: Arc<VersionStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock (inference runs outside it),
        // so a poisoned lock still guards a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The queue and workers of one model version. Dropping it lets the
/// workers finish what is queued, then stop and drop their sessions.
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("policy", &self.shared.policy)
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

/// The batch key of a request: every input's datatype and non-batch
/// dimensions. Requests batch together only when their keys are equal.
fn batch_key(request: &DecodedRequest) -> Box<[u64]> {
    let mut key = Vec::with_capacity(request.inputs.len() * 4);
    for input in &request.inputs {
        key.push(input.datatype as u64);
        key.push(input.shape.len() as u64);
        key.extend(input.shape.iter().skip(1).map(|&d| d as u64));
    }
    key.into_boxed_slice()
}

impl Scheduler {
    /// Starts one worker thread per instance, sharing a queue of at most
    /// `capacity` waiting requests.
    pub fn start(
        name: &str,
        instances: Vec<Instance>,
        policy: BatchPolicy,
        capacity: usize,
        stats: Arc<VersionStats>,
    ) -> std::io::Result<Scheduler> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            policy,
            capacity,
            stats,
        });
        for (index, instance) in instances.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || work(&shared, instance))?;
        }
        Ok(Scheduler { shared })
    }

    /// Queues `request`; the receiver yields its outputs once it has run.
    pub fn submit(&self, request: DecodedRequest) -> Result<oneshot::Receiver<Reply>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            rows: request.batch_size.unwrap_or(1),
            key: batch_key(&request),
            enqueued: Instant::now(),
        };
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(SubmitError::Stopped);
            }
            if state.queue.len() >= self.shared.capacity {
                // Callers that gave up no longer count against the limit.
                state.queue.retain(|e| !e.reply.is_closed());
            }
            if state.queue.len() >= self.shared.capacity {
                return Err(SubmitError::QueueFull {
                    capacity: self.shared.capacity,
                });
            }
            state.queue.push_back(Entry {
                waiting,
                request,
                reply,
            });
            self.shared.stats.set_pending(state.queue.len());
        }
        self.shared.wake.notify_one();
        Ok(answer)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// Takes the entries at `positions` (ascending) out of the queue, skipping
/// those whose caller has gone.
fn take(queue: &mut VecDeque<Entry>, positions: &[usize]) -> Vec<Entry> {
    let mut batch: Vec<Entry> = positions
        .iter()
        .rev()
        .filter_map(|&p| queue.remove(p))
        .filter(|e| !e.reply.is_closed())
        .collect();
    batch.reverse();
    batch
}

/// Waits for the next batch; `None` once the scheduler is dropped and the
/// queue is empty.
fn next_batch(shared: &Shared) -> Option<Vec<Entry>> {
    let mut state = shared.lock();
    loop {
        // Callers that gave up while waiting at the front are let go at
        // once, so they do not hold up a batch.
        while state.queue.front().is_some_and(|e| e.reply.is_closed()) {
            state.queue.pop_front();
            shared.stats.set_pending(state.queue.len());
        }
        if state.queue.is_empty() && state.closed {
            return None;
        }
        let now = Instant::now();
        match shared.policy.decide(state.queue.make_contiguous(), now) {
            Decision::Run(positions) => {
                let batch = take(&mut state.queue, &positions);
                shared.stats.set_pending(state.queue.len());
                if !batch.is_empty() {
                    return Some(batch);
                }
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

fn work(shared: &Shared, mut instance: Instance) {
    while let Some(batch) = next_batch(shared) {
        let started = Instant::now();
        for entry in &batch {
            shared.stats.record_queue(started - entry.waiting.enqueued);
        }
        let requests: Vec<&DecodedRequest> = batch.iter().map(|e| &e.request).collect();
        // A panic inside ONNX Runtime's bindings must cost this batch, not
        // the model: the worker goes on with the next one.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| instance.run_batch(&requests)))
            .unwrap_or_else(|_| Err(BackendError::Run("the inference thread panicked".into())));
        match result {
            Ok(done) => {
                let rows = batch.iter().map(|e| e.waiting.rows).sum();
                shared.stats.record_execution(batch.len(), rows, done.times);
                for (entry, outputs) in batch.into_iter().zip(done.outputs) {
                    // The caller may have gone meanwhile; nobody is left to tell.
                    let _ = entry.reply.send(Ok(outputs));
                }
            }
            Err(error) => {
                for entry in batch {
                    let _ = entry.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
