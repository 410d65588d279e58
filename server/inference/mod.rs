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
use crate::error::{Error, client_fault};
use crate::fault_log::{Admit, RateLimit};
use crate::metrics::Protocol;
use crate::repository::{LoadedVersion, Repository};
use crate::scheduler::Served;
use crate::shm::{self, SharedMemory};
use crate::tensor::{Tensor, decode_request, encode_outputs};
use crate::trace::{Outcome, Ran, Timeline, TraceParent, Traces};

use request_parameters::{priority_parameter, timeout_parameter};

/// Protocol extensions served, by their Triton names, as every transport's
/// server metadata lists them (clients and perf_analyzer check the list
/// before calling them). Not `cuda_shared_memory`: its calls answer, but no
/// region can be registered.
pub(crate) const EXTENSIONS: &[&str] = &[
    "model_configuration",
    "statistics",
    "model_repository",
    "model_repository(unload_dependents)",
    "system_shared_memory",
    "binary_tensor_data",
    "trace",
    "logging",
];

/// What a transport knows of a request before reading its body: when it
/// arrived, over which protocol, the client's deadline (gRPC's
/// `grpc-timeout`), if any, and the caller's trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrival {
    /// When the request's headers arrived.
    pub received: Instant,
    /// When the client stops waiting.
    pub deadline: Option<Instant>,
    /// The transport it came over.
    pub protocol: Protocol,
    /// The caller's span (W3C `traceparent`), if it sent one.
    pub trace: Option<TraceParent>,
}

impl Arrival {
    /// A request arriving now over `protocol`, without a client deadline or
    /// trace context.
    pub(crate) fn now(protocol: Protocol) -> Arrival {
        Arrival {
            received: Instant::now(),
            deadline: None,
            protocol,
            trace: None,
        }
    }
}

/// The ERROR lines of failed inferences (server faults only).
static INFERENCE_FAILED: RateLimit = RateLimit::new();

/// The inference core shared by every transport.
#[derive(Debug, Clone)]
pub(crate) struct Inference {
    repository: Arc<Repository>,
    served_by: Arc<str>,
    cache: Option<Arc<ResponseCache>>,
    shm: Arc<SharedMemory>,
    traces: Arc<Traces>,
    /// The most bytes one input may take from shared memory: the same
    /// bound a message carrying them would have.
    max_input_bytes: usize,
}

impl Inference {
    /// The core answering from `repository`, naming itself `served_by` in
    /// every response (the pod or host name: which replica answered), with
    /// the server's response cache, if it has one, reading and writing
    /// tensors in `shm` when requests name a region, and recording spans in
    /// `traces`.
    pub(crate) fn new(
        repository: Arc<Repository>,
        served_by: &str,
        cache: Option<Arc<ResponseCache>>,
        shm: Arc<SharedMemory>,
        traces: Arc<Traces>,
        max_input_bytes: usize,
    ) -> Inference {
        Inference {
            repository,
            served_by: served_by.into(),
            cache,
            shm,
            traces,
            max_input_bytes,
        }
    }

    /// The repository the core answers from.
    pub(crate) fn repository(&self) -> &Arc<Repository> {
        &self.repository
    }

    /// The registered shared memory regions.
    pub(crate) fn shared_memory(&self) -> &Arc<SharedMemory> {
        &self.shm
    }

    /// The trace settings and exporter.
    pub(crate) fn traces(&self) -> &Arc<Traces> {
        &self.traces
    }

    /// Answers one inference request. It is counted once in its version's
    /// statistics and metrics: as a success, as a failure with its code, or
    /// as cancelled when the caller drops this future before it completes.
    pub(crate) async fn infer(
        &self,
        mut request: ModelInferRequest,
        arrival: Arrival,
    ) -> Result<ModelInferResponse, Error> {
        // One span per request, at debug level: every log line below it
        // carries these. At the default level it costs nothing (creating
        // and entering an enabled span was ~4% of a request's CPU); the
        // ERROR line of a failure names them itself.
        let span = tracing::debug_span!(
            "infer",
            model = %request.model_name,
            requested_version = %request.model_version,
            version = tracing::field::Empty,
            id = %request.id,
        );
        // Held here for the ERROR line of a failure and the trace, and
        // moved into the answer at the end (not copied).
        let request_id = std::mem::take(&mut request.id);
        // Only a traced request pays for keeping this.
        let model = self.traces.recording().then(|| request.model_name.clone());
        let mut timeline = Timeline::new(arrival.received);
        let mut version = None;
        let result = async {
            let loaded = self
                .repository
                .get(&request.model_name, &request.model_version)
                .inspect_err(|e| self.repository.unroutable(e))?;
            version = Some(loaded.version);
            tracing::Span::current().record("version", loaded.version);
            let record = loaded.stats.begin(arrival.received, arrival.protocol);
            let result = self.run(&loaded, request, arrival, &mut timeline).await;
            match &result {
                Ok(_) => record.succeeded(),
                Err(error) => {
                    let code = error.code();
                    record.failed(code);
                    if code == tonic::Code::Internal {
                        // The server's own failure: operators must see it,
                        // but a fault that repeats per request must not
                        // flood the log.
                        let (model, id) = (&loaded.model, &request_id);
                        match INFERENCE_FAILED.admit(std::time::Instant::now()) {
                            Admit::Log { suppressed: 0 } => tracing::error!(
                                %model,
                                version = loaded.version,
                                %id,
                                ?code,
                                %error,
                                "inference failed"
                            ),
                            Admit::Log { suppressed } => tracing::error!(
                                %model,
                                version = loaded.version,
                                %id,
                                ?code,
                                %error,
                                suppressed,
                                "inference failed (suppressed {suppressed} similar)"
                            ),
                            Admit::Suppress => {
                                tracing::debug!(?code, %error, "inference failed");
                            }
                        }
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
        .await;
        if let Err(error) = &result
            && let Some(reason) = client_fault(error.code())
            && let Some(metrics) = self.repository.metrics()
        {
            metrics.client_error(arrival.protocol, reason);
        }
        if let Some(model) = model {
            timeline.answered = Some(Instant::now());
            let outcome = Outcome {
                protocol: arrival.protocol.as_str(),
                model: &model,
                version,
                id: &request_id,
                error: result.as_ref().err().map(|e| (e.code(), e.to_string())),
            };
            self.traces
                .record(arrival.trace.as_ref(), &timeline, &outcome);
        }
        result.map(|mut response| {
            response.id = request_id;
            response
        })
    }
}

impl Inference {
    /// Validates, queues (or finds in the response cache) and answers
    /// `request` on `loaded` before its deadline, stamping `timeline` as it
    /// goes.
    async fn run(
        &self,
        loaded: &LoadedVersion,
        request: ModelInferRequest,
        arrival: Arrival,
        timeline: &mut Timeline,
    ) -> Result<ModelInferResponse, Error> {
        let timeout = timeout_parameter(&loaded.model, &request.parameters)?;
        let priority = priority_parameter(&loaded.model, &request.parameters)?;
        let admission = loaded.admit(arrival.received, arrival.deadline, timeout, priority)?;
        let cache = self.cache.as_deref().filter(|_| loaded.response_cache);
        let external = shm::input_refs(&self.shm, &request, self.max_input_bytes)?;
        let to_shm = shm::output_refs(&self.shm, &request)?;
        let work = async {
            let decoded = decode_request(&loaded.spec, &request, &external)?;
            drop(external);
            timeline.queued = Some(Instant::now());
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
            Answer::Ran(served) => {
                timeline.ran = Some(Ran {
                    waited: served.queued,
                    compute: served.times.input + served.times.infer + served.times.output,
                    batch_rows: served.batch_rows,
                    instance: served.instance,
                });
                (timing_parameters(&served, &self.served_by), served.output)
            }
            Answer::Cached(outputs) => (cached_parameters(&self.served_by), outputs),
        };
        let (mut outputs, mut raw_output_contents) = encode_outputs(outputs);
        if !to_shm.is_empty() {
            to_shm.write(&mut outputs, &mut raw_output_contents)?;
        }
        Ok(ModelInferResponse {
            model_name: loaded.model.clone(),
            model_version: loaded.version.to_string(),
            // [`Inference::infer`] took the id out and puts it back.
            id: String::new(),
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
pub fn timing_parameters<O>(
    served: &Served<O>,
    served_by: &str,
) -> HashMap<String, InferParameter> {
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
