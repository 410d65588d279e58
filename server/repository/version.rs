//! A model version that is loaded and serving: its spec, configuration,
//! statistics and scheduler.

use std::sync::Arc;
use std::time::Duration;

use oxserve_proto::inference::ModelConfig;
use tokio::time::Instant;

use crate::error::Error;
use crate::scheduler::{Scheduler, SchedulerError, Served};
use crate::stats::VersionStats;
use crate::tensor::{DecodedRequest, ModelSpec, Tensor, batch_key};

/// A version that is loaded and serving.
#[derive(Debug)]
pub(crate) struct LoadedVersion {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// Inputs and outputs, as requests are validated against them.
    pub spec: Arc<ModelSpec>,
    /// The completed configuration.
    pub config: ModelConfig,
    /// Cumulative statistics.
    pub stats: Arc<VersionStats>,
    pub(super) default_timeout: Option<Duration>,
    pub(super) allow_timeout_override: bool,
    pub(super) scheduler: Scheduler<DecodedRequest, Vec<Tensor>>,
}

impl LoadedVersion {
    /// When a request must have been answered: the earliest of the client's
    /// deadline and the request's `timeout` parameter (or the model's
    /// default timeout, which the parameter may only replace when the
    /// model's queue policy allows it), counted from `received`.
    pub(crate) fn deadline(
        &self,
        received: Instant,
        client: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Option<Instant> {
        let timeout = match (timeout, self.default_timeout) {
            // As in Triton, an override may only shorten the default.
            (Some(t), Some(default)) if self.allow_timeout_override => Some(t.min(default)),
            (Some(_), Some(default)) => Some(default),
            (Some(t), None) => Some(t),
            (None, default) => default,
        };
        let own = timeout.map(|t| received + t);
        match (client, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Queues a validated request and waits for its outputs. Dropping the
    /// future (the caller gave up, or its deadline passed) takes the
    /// request out of the queue, so it is not run.
    pub(crate) async fn infer(
        &self,
        request: DecodedRequest,
    ) -> Result<Served<Vec<Tensor>>, Error> {
        let rows = request.batch_size.unwrap_or(1);
        let key = batch_key(&request);
        let ticket = self
            .scheduler
            .submit(request, rows, key)
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
