//! A model version that is loaded and serving: its spec, configuration,
//! statistics and scheduler, and how it admits a request (priority level,
//! deadline).

use std::sync::Arc;
use std::time::Duration;

use oxserve_proto::inference::ModelConfig;
use tokio::time::Instant;

use crate::error::Error;
use crate::model_config::QueuePolicies;
use crate::scheduler::{Scheduler, SchedulerError, Served};
use crate::stats::VersionStats;
use crate::tensor::{DecodedRequest, ModelSpec, Tensor, batch_key};

/// A version that is loaded and serving.
#[derive(Debug)]
pub(crate) struct LoadedVersion {
    /// Model name.
    pub(crate) model: String,
    /// Version number.
    pub(crate) version: u64,
    /// Inputs and outputs, as requests are validated against them.
    pub(crate) spec: Arc<ModelSpec>,
    /// The completed configuration.
    pub(crate) config: ModelConfig,
    /// Cumulative statistics.
    pub(crate) stats: Arc<VersionStats>,
    /// Whether the server picks the batch size (ModelConfig then reports
    /// the one in use).
    pub(crate) auto_batch: bool,
    /// Whether answers are kept in the response cache.
    pub(crate) response_cache: bool,
    /// This load of the version, unique in the process: cached answers of
    /// an earlier load of the same version never answer for this one.
    pub(crate) load_id: u64,
    pub(super) queues: QueuePolicies,
    pub(super) scheduler: Scheduler<DecodedRequest, Vec<Tensor>>,
}

/// Where and until when a request waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Its priority level (0 = the highest).
    pub(crate) level: usize,
    /// When it must have been answered, if ever.
    pub(crate) deadline: Option<Instant>,
    /// With the DELAY timeout action: when it starts yielding to the
    /// others instead of being rejected.
    pub(crate) delayed_after: Option<Instant>,
}

impl LoadedVersion {
    /// How a request that arrived at `received`, with the client's
    /// deadline `client`, its `timeout` parameter and its `priority`
    /// parameter, is queued: the level (priority 0 or none = the model's
    /// default level), and the earliest of the client's deadline and the
    /// request's timeout (or the level's default timeout, which the
    /// parameter may only replace when the queue policy allows it, and then
    /// only to shorten it, as in Triton).
    pub(crate) fn admit(
        &self,
        received: Instant,
        client: Option<Instant>,
        timeout: Option<Duration>,
        priority: Option<u64>,
    ) -> Result<Admission, Error> {
        let levels = self.queues.levels.len();
        let level = match priority {
            None | Some(0) => self.queues.default_level,
            Some(p) if p <= levels as u64 => (p - 1) as usize,
            Some(p) => {
                return Err(Error::InvalidParameter {
                    model: self.model.clone(),
                    parameter: "priority",
                    reason: format!(
                        "{p} is outside 1..={levels} (the model's priority levels; 0 means its default)"
                    ),
                });
            }
        };
        let policy = &self.queues.levels[level];
        let timeout = match (timeout, policy.default_timeout) {
            (Some(t), Some(default)) if policy.allow_timeout_override => Some(t.min(default)),
            (Some(_), Some(default)) => Some(default),
            (Some(t), None) => Some(t),
            (None, default) => default,
        };
        let own = timeout.map(|t| received + t);
        let (own_deadline, delayed_after) = if policy.delay {
            // DELAY: the timeout only moves the request behind the others.
            (None, own)
        } else {
            (own, None)
        };
        let deadline = match (client, own_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Admission {
            level,
            deadline,
            delayed_after,
        })
    }

    /// The batch size in use: the configured one, or the one the server
    /// picked for now.
    pub(crate) fn batch_limit(&self) -> usize {
        self.scheduler.batch_limit()
    }

    /// Queues a validated request and waits for its outputs. Dropping the
    /// future (the caller gave up, or its deadline passed) takes the
    /// request out of the queue, so it is not run.
    pub(crate) async fn infer(
        &self,
        request: DecodedRequest,
        admission: Admission,
    ) -> Result<Served<Vec<Tensor>>, Error> {
        let rows = request.batch_size.unwrap_or(1);
        let key = batch_key(&request);
        // Alone in the server (this request's own record counts one), a
        // short model may run it on this thread; under load it queues, to
        // batch and to leave the runtime's threads to the transport.
        let submit = match self.stats.in_flight() <= 1 {
            true => Scheduler::submit_alone,
            false => Scheduler::submit,
        };
        let ticket = submit(
            &self.scheduler,
            request,
            rows,
            key,
            admission.level,
            admission.delayed_after,
        )
        .map_err(|e| self.error(e))?;
        ticket.await.map_err(|e| self.error(e))
    }

    fn error(&self, error: SchedulerError) -> Error {
        let model = self.model.clone();
        let version = self.version.to_string();
        match error {
            SchedulerError::QueueFull { capacity } => Error::QueueFull {
                model,
                version,
                capacity,
            },
            SchedulerError::Stopped => Error::Stopped { model, version },
            SchedulerError::Failed(source) => Error::Inference {
                model,
                version,
                source,
            },
        }
    }
}
