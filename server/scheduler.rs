//! Hands requests for one model version to the thread that owns its ONNX
//! Runtime session, through a bounded queue, and carries the answer back.
//!
//! The async side never blocks: `submit` either queues the request at once or
//! reports the queue full. The worker skips requests whose caller has gone
//! away (cancelled or timed out) instead of running them for nobody.

use std::panic::AssertUnwindSafe;
use std::thread;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use crate::backend::{BackendError, Instance};
use crate::tensor::{DecodedRequest, Tensor};

/// The outcome of one request, as the worker reports it.
pub type Reply = Result<Vec<Tensor>, BackendError>;

struct Job {
    request: DecodedRequest,
    reply: oneshot::Sender<Reply>,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds its maximum number of requests.
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The worker has stopped (the model is being unloaded).
    Stopped,
}

/// The queue in front of one model version's worker thread.
#[derive(Debug, Clone)]
pub struct Scheduler {
    queue: Sender<Job>,
    capacity: usize,
}

impl Scheduler {
    /// Starts a worker thread that owns `instance`, behind a queue of at most
    /// `capacity` waiting requests. The thread ends, dropping the session,
    /// when the last `Scheduler` handle is dropped.
    pub fn start(
        thread_name: String,
        instance: Instance,
        capacity: usize,
    ) -> std::io::Result<Scheduler> {
        let (queue, jobs) = crossbeam_channel::bounded::<Job>(capacity);
        thread::Builder::new().name(thread_name).spawn(move || {
            let mut instance = instance;
            for job in jobs {
                if job.reply.is_closed() {
                    // The caller gave up while the request waited.
                    continue;
                }
                let request = job.request;
                // A panic inside ONNX Runtime's bindings must cost one request,
                // not the model: the worker goes on with the next job.
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    instance.run(&request.inputs, &request.outputs)
                }))
                .unwrap_or_else(|_| Err(BackendError::Run("the inference thread panicked".into())));
                // The caller may have gone meanwhile; nobody is left to tell.
                let _ = job.reply.send(result);
            }
        })?;
        Ok(Scheduler { queue, capacity })
    }

    /// Queues `request`; the receiver yields the result once it has run.
    pub fn submit(&self, request: DecodedRequest) -> Result<oneshot::Receiver<Reply>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job { request, reply }) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull {
                capacity: self.capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }
}
