//! The one request path every transport calls: find the model version,
//! apply the deadline, validate, queue, answer, and account for the request
//! exactly once, whatever its outcome.
//!
//! Transports are thin adapters: they turn their wire format into a
//! `ModelInferRequest` and an [`Arrival`], call [`Inference::infer`], and
//! map an [`Error`] to their own status with [`Error::code`].

mod request_parameters;

use std::sync::Arc;

use std::collections::HashMap;

use oxserve_proto::inference::{InferParameter, ModelInferRequest, ModelInferResponse};
use tokio::time::Instant;
use tracing::Instrument;

use crate::cache::ResponseCache;
use crate::error::Error;
use crate::repository::{LoadedVersion, Repository};
use crate::scheduler::Served;
use crate::tensor::{Tensor, decode_request, encode_outputs};

use request_parameters::{priority_parameter, timeout_parameter};

/// What a transport knows of a request before reading its body: when it
/// arrived, and the client's deadline (gRPC's `grpc-timeout`), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrival {
    /// When the request's headers arrived.
    pub received: Instant,
    /// When the client stops waiting.
    pub deadline: Option<Instant>,
}

impl Arrival {
    /// A request arriving now, without a client deadline.
    pub(crate) fn now() -> Arrival {
        Arrival {
            received: Instant::now(),
            deadline: None,
        }
    }
}

/// The inference core shared by every transport.
#[derive(Debug, Clone)]
pub(crate) struct Inference {
    repository: Arc<Repository>,
    served_by: Arc<str>,
    cache: Option<Arc<ResponseCache>>,
}

impl Inference {
    /// The core answering from `repository`, naming itself `served_by` in
    /// every response (the pod or host name: which replica answered), with
    /// the server's response cache, if it has one.
    pub(crate) fn new(
        repository: Arc<Repository>,
        served_by: &str,
        cache: Option<Arc<ResponseCache>>,
    ) -> Inference {
        Inference {
            repository,
            served_by: served_by.into(),
            cache,
        }
    }

    /// The repository the core answers from.
    pub(crate) fn repository(&self) -> &Arc<Repository> {
        &self.repository
    }

    /// Answers one inference request. It is counted once in its version's
    /// statistics and metrics: as a success, as a failure with its code, or
    /// as cancelled when the caller drops this future before it completes.
    pub(crate) async fn infer(
        &self,
        request: ModelInferRequest,
        arrival: Arrival,
    ) -> Result<ModelInferResponse, Error> {
        // One span per request: every log line below it carries these.
        let span = tracing::info_span!(
            "infer",
            model = %request.model_name,
            requested_version = %request.model_version,
            version = tracing::field::Empty,
            id = %request.id,
        );
        async {
            let loaded = self
                .repository
                .get(&request.model_name, &request.model_version)
                .inspect_err(|e| self.repository.unroutable(e))?;
            tracing::Span::current().record("version", loaded.version);
            let record = loaded.stats.begin(arrival.received);
            let result = self.run(&loaded, request, arrival).await;
            match &result {
                Ok(_) => record.succeeded(),
                Err(error) => {
                    let code = error.code();
                    record.failed(code);
                    if code == tonic::Code::Internal {
                        // The server's own failure: operators must see it.
                        tracing::error!(?code, %error, "inference failed");
                    } else {
                        // A client's error is the client's news, and a flood
                        // of them must not flood the logs.
                        tracing::debug!(?code, %error, "request failed");
                    }
                }
            }
            result
        }
        .instrument(span)
        .await
    }
}

impl Inference {
    /// Validates, queues (or finds in the response cache) and answers
    /// `request` on `loaded` before its deadline.
    async fn run(
        &self,
        loaded: &LoadedVersion,
        request: ModelInferRequest,
        arrival: Arrival,
    ) -> Result<ModelInferResponse, Error> {
        let timeout = timeout_parameter(&loaded.model, &request.parameters)?;
        let priority = priority_parameter(&loaded.model, &request.parameters)?;
        let admission = loaded.admit(arrival.received, arrival.deadline, timeout, priority)?;
        let cache = self.cache.as_deref().filter(|_| loaded.response_cache);
        let work = async {
            let decoded = decode_request(&loaded.spec, &request)?;
            let Some(cache) = cache else {
                return loaded.infer(decoded, admission).await.map(Answer::Ran);
            };
            let looking = Instant::now();
            let key = cache.key(loaded.load_id, &decoded);
            if let Some(outputs) = cache.get(&key) {
                loaded.stats.record_cache_hit(looking.elapsed());
                return Ok(Answer::Cached(outputs));
            }
            let lookup = looking.elapsed();
            let served = loaded.infer(decoded, admission).await?;
            let storing = Instant::now();
            cache.put(key, &served.output);
            loaded.stats.record_cache_miss(lookup + storing.elapsed());
            Ok(Answer::Ran(served))
        };
        let answer = match admission.deadline {
            None => work.await?,
            // Whatever stage the request is in when the deadline passes,
            // this answers; a request still queued leaves the queue
            // unexecuted.
            Some(deadline) => tokio::time::timeout_at(deadline, work)
                .await
                .map_err(|_| Error::DeadlineExceeded {
                    model: loaded.model.clone(),
                    version: loaded.version.to_string(),
                })??,
        };
        let (parameters, outputs) = match answer {
            Answer::Ran(served) => (timing_parameters(&served, &self.served_by), served.output),
            Answer::Cached(outputs) => (cached_parameters(&self.served_by), outputs),
        };
        let (outputs, raw_output_contents) = encode_outputs(outputs);
        Ok(ModelInferResponse {
            model_name: loaded.model.clone(),
            model_version: loaded.version.to_string(),
            id: request.id,
            parameters,
            outputs,
            raw_output_contents,
        })
    }
}

/// Where an answer came from.
enum Answer {
    /// The model ran.
    Ran(Served<Vec<Tensor>>),
    /// The response cache had it.
    Cached(Vec<Tensor>),
}

/// Response parameter names, documented in docs/clients.md.
pub(crate) mod parameters {
    /// Nanoseconds the request waited in the model's queue.
    pub(crate) const QUEUE_NS: &str = "queue_ns";
    /// Nanoseconds of the execution it ran in (input copy, model, output
    /// copy), shared by every request of that batch.
    pub(crate) const COMPUTE_NS: &str = "compute_ns";
    /// Rows in the execution it ran in.
    pub(crate) const BATCH_SIZE: &str = "batch_size";
    /// Which instance of the model version ran it (0-based).
    pub(crate) const INSTANCE: &str = "instance";
    /// The replica (pod or host) that answered.
    pub(crate) const SERVED_BY: &str = "served_by";
    /// True when the answer came from the response cache (the model did
    /// not run: no queue, compute, batch or instance parameters).
    pub(crate) const CACHE_HIT: &str = "cache_hit";
}

/// The parameters of an answer from the response cache.
fn cached_parameters(served_by: &str) -> HashMap<String, InferParameter> {
    HashMap::from([
        (parameters::CACHE_HIT.into(), true.into()),
        (parameters::SERVED_BY.into(), served_by.into()),
    ])
}

/// Where a request's time went, and who served it, as response parameters.
fn timing_parameters<O>(served: &Served<O>, served_by: &str) -> HashMap<String, InferParameter> {
    let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let times = &served.times;
    HashMap::from([
        (parameters::QUEUE_NS.into(), nanos(served.queued).into()),
        (
            parameters::COMPUTE_NS.into(),
            nanos(times.input + times.infer + times.output).into(),
        ),
        (
            parameters::BATCH_SIZE.into(),
            i64::try_from(served.batch_rows).unwrap_or(i64::MAX).into(),
        ),
        (
            parameters::INSTANCE.into(),
            i64::try_from(served.instance).unwrap_or(i64::MAX).into(),
        ),
        (parameters::SERVED_BY.into(), served_by.into()),
    ])
}
