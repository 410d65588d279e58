//! Prometheus metrics, on their own HTTP port (`/metrics`).
//!
//! Every metric is named once (`catalog.rs`), described once at start-up
//! with its unit, and recorded through handles created per model version when it
//! loads, so the request path does no name or label lookups. Each server
//! owns its recorder (not the process-global one), so several servers in
//! one process (the tests) keep separate counts.
//!
//! The same calls that update ModelStatistics update these (see
//! [`crate::stats`]), so the two always agree.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

mod catalog;
mod process;
use crate::cache::ResponseCache;
use catalog::{BATCH_BUCKETS, DESCRIPTIONS, Kind, MODEL_STATES, SECONDS_BUCKETS};
pub(crate) use catalog::{CLIENT_ERROR_REASONS, UNROUTABLE_REASONS, names};

/// The transport a request came over: the `protocol` label of the request
/// counter. Two values, so the label set stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// gRPC (`inference.GRPCInferenceService`).
    Grpc,
    /// KServe v2 REST.
    Http,
}

impl Protocol {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// How often raw histogram samples are folded into buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// One server's metrics.
pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The response cache, whose size is read at each scrape.
    cache: OnceLock<Arc<ResponseCache>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A recorder with every metric described.
    pub(crate) fn new() -> Arc<Metrics> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(names::BATCH_SIZE.into()), BATCH_BUCKETS)
            })
            // The bucket lists above are non-empty constants.
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        for &(name, kind, unit, help) in DESCRIPTIONS {
            let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            match kind {
                Kind::Counter => recorder.describe_counter(name, unit, help),
                Kind::Gauge => recorder.describe_gauge(name, unit, help),
                Kind::Histogram => recorder.describe_histogram(name, unit, help),
            }
        }
        // Counters a scrape should show from the start, at zero.
        for reason in UNROUTABLE_REASONS {
            recorder
                .register_counter(
                    &Self::key(names::UNROUTABLE, vec![Label::new("reason", reason)]),
                    &METADATA,
                )
                .increment(0);
        }
        for protocol in [Protocol::Grpc, Protocol::Http] {
            for reason in CLIENT_ERROR_REASONS {
                recorder
                    .register_counter(&Self::client_error_key(protocol, reason), &METADATA)
                    .increment(0);
            }
        }
        let handle = recorder.handle();
        Arc::new(Metrics {
            recorder,
            handle,
            cache: OnceLock::new(),
        })
    }

    fn key(name: &'static str, labels: Vec<Label>) -> Key {
        Key::from_parts(name, labels)
    }

    fn labels(model: &str, version: u64) -> Vec<Label> {
        vec![
            Label::new("model", model.to_string()),
            Label::new("version", version.to_string()),
        ]
    }

    /// Handles for one model version.
    pub(crate) fn version(self: &Arc<Self>, model: &str, version: u64) -> VersionMetrics {
        let labels = || Self::labels(model, version);
        let counter = |name| {
            self.recorder
                .register_counter(&Self::key(name, labels()), &METADATA)
        };
        let histogram = |name| {
            self.recorder
                .register_histogram(&Self::key(name, labels()), &METADATA)
        };
        let gauge = |name| {
            self.recorder
                .register_gauge(&Self::key(name, labels()), &METADATA)
        };
        VersionMetrics {
            owner: Some((Arc::clone(self), model.to_string(), version)),
            inflight: gauge(names::INFLIGHT),
            requests: Default::default(),
            inferences: counter(names::INFERENCES),
            executions: counter(names::EXECUTIONS),
            pending: self
                .recorder
                .register_gauge(&Self::key(names::PENDING, labels()), &METADATA),
            request_duration: histogram(names::REQUEST_DURATION),
            queue_duration: histogram(names::QUEUE_DURATION),
            compute_input: histogram(names::COMPUTE_INPUT_DURATION),
            compute_infer: histogram(names::COMPUTE_INFER_DURATION),
            compute_output: histogram(names::COMPUTE_OUTPUT_DURATION),
            batch_size: histogram(names::BATCH_SIZE),
            batch_size_limit: gauge(names::BATCH_SIZE_LIMIT),
            instances_active: gauge(names::INSTANCES_ACTIVE),
            cache_hits: counter(names::CACHE_HITS),
            cache_misses: counter(names::CACHE_MISSES),
        }
    }

    /// Records that a version (`None`: the model as a whole) entered
    /// `state` ("loading", "ready", "failed" or "unloaded"), and how long
    /// loading took once it is done.
    pub(crate) fn model_state(
        &self,
        model: &str,
        version: Option<u64>,
        state: &str,
        load_seconds: Option<f64>,
    ) {
        let version = version.map_or_else(String::new, |v| v.to_string());
        let labels = || {
            vec![
                Label::new("model", model.to_string()),
                Label::new("version", version.clone()),
            ]
        };
        for candidate in MODEL_STATES {
            let mut labels = labels();
            labels.push(Label::new("state", candidate));
            let gauge = self
                .recorder
                .register_gauge(&Self::key(names::MODEL_STATE, labels), &METADATA);
            gauge.set(if candidate == state { 1.0 } else { 0.0 });
        }
        if let Some(seconds) = load_seconds {
            self.recorder
                .register_gauge(&Self::key(names::MODEL_LOAD_DURATION, labels()), &METADATA)
                .set(seconds);
        }
    }

    /// A model could not load as a whole (its configuration, no versions).
    pub(crate) fn model_problem(&self, model: &str) {
        self.model_state(model, None, "failed", None);
    }

    /// One load of `model` (all the versions it loaded) ended, after
    /// `seconds`.
    pub(crate) fn model_load(&self, model: &str, success: bool, seconds: f64) {
        let outcome = if success { "success" } else { "failure" };
        if success {
            // The model as a whole is fine again.
            self.model_state(model, None, "ready", None);
        }
        let labels = vec![
            Label::new("model", model.to_string()),
            Label::new("outcome", outcome),
        ];
        self.recorder
            .register_counter(&Self::key(names::MODEL_LOADS, labels), &METADATA)
            .increment(1);
        self.recorder
            .register_histogram(
                &Self::key(
                    names::MODEL_LOAD_SECONDS,
                    vec![Label::new("outcome", outcome)],
                ),
                &METADATA,
            )
            .record(seconds);
        // Present from the first load, so rates over it start at zero.
        self.recorder
            .register_counter(
                &Self::key(
                    names::MODEL_UNLOADS,
                    vec![Label::new("model", model.to_string())],
                ),
                &METADATA,
            )
            .increment(0);
    }

    /// `model` was unloaded (by request, or its directory went away).
    pub(crate) fn model_unload(&self, model: &str) {
        self.recorder
            .register_counter(
                &Self::key(
                    names::MODEL_UNLOADS,
                    vec![Label::new("model", model.to_string())],
                ),
                &METADATA,
            )
            .increment(1);
    }

    /// An inference request no loaded version could take.
    pub(crate) fn unroutable(&self, reason: &'static str) {
        self.recorder
            .register_counter(
                &Self::key(names::UNROUTABLE, vec![Label::new("reason", reason)]),
                &METADATA,
            )
            .increment(1);
    }

    /// A request refused for its API key (`auth`): `group` is a group name
    /// or `other`, `reason` one of missing, malformed, wrong.
    pub(crate) fn auth_rejected(&self, group: &'static str, reason: &'static str) {
        self.auth_rejections(group, reason).increment(1);
    }

    /// Shows the rejection counters of `groups` at zero from the start, so
    /// that rates and alerts work before the first refusal.
    pub(crate) fn auth_rejections_from_zero(
        &self,
        groups: &[&'static str],
        reasons: &[&'static str],
    ) {
        for &group in groups {
            for &reason in reasons {
                self.auth_rejections(group, reason).increment(0);
            }
        }
    }

    fn auth_rejections(&self, group: &'static str, reason: &'static str) -> Counter {
        self.recorder.register_counter(
            &Self::key(
                names::AUTH_REJECTIONS,
                vec![Label::new("group", group), Label::new("reason", reason)],
            ),
            &METADATA,
        )
    }

    /// An inference request refused for the caller's fault; `reason` is
    /// one of [`CLIENT_ERROR_REASONS`].
    pub(crate) fn client_error(&self, protocol: Protocol, reason: &'static str) {
        self.recorder
            .register_counter(&Self::client_error_key(protocol, reason), &METADATA)
            .increment(1);
    }

    fn client_error_key(protocol: Protocol, reason: &'static str) -> Key {
        Self::key(
            names::CLIENT_ERRORS,
            vec![
                Label::new("protocol", protocol.as_str()),
                Label::new("reason", reason),
            ],
        )
    }

    /// The exposition text, with process metrics sampled now.
    pub(crate) fn render(&self) -> String {
        if let Some(cache) = self.cache.get() {
            let (bytes, entries) = cache.usage();
            let gauge = |name| {
                self.recorder
                    .register_gauge(&Self::key(name, Vec::new()), &METADATA)
            };
            gauge(names::CACHE_BYTES).set(bytes as f64);
            gauge(names::CACHE_ENTRIES).set(entries as f64);
        }
        let mut text = self.handle.render();
        process::render(&mut text);
        text
    }

    /// Reports `cache`'s size at every scrape.
    pub(crate) fn watch_cache(&self, cache: Arc<ResponseCache>) {
        let _ = self.cache.set(cache);
    }

    /// The `GET /metrics` HTTP service, and the upkeep to run beside it
    /// for as long as it is served: histogram samples are kept raw until
    /// upkeep folds them into their buckets, and without it memory would
    /// grow with every request between scrapes (the exporter's own
    /// installer runs this on a thread).
    pub(crate) fn endpoint(
        self: Arc<Self>,
    ) -> (
        impl tower::Service<
            Request<hyper::body::Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let upkeep = {
            let metrics = Arc::clone(&self);
            async move {
                let mut tick = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    tick.tick().await;
                    metrics.handle.run_upkeep();
                }
            }
        };
        let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            let metrics = Arc::clone(&self);
            async move { Ok::<_, Infallible>(metrics.respond(&request)) }
        });
        (service, upkeep)
    }

    fn respond<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&hyper::Method::GET, "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.render(),
            ),
            (_, "/metrics") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "use GET\n".into(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "metrics are at /metrics\n".into(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    }
}

/// Metric handles of one model version; all no-ops when metrics are off.
pub(crate) struct VersionMetrics {
    owner: Option<(Arc<Metrics>, String, u64)>,
    /// Request counters by protocol and gRPC code, registered on first use.
    requests: [[OnceLock<Counter>; 17]; 2],
    pub(crate) inferences: Counter,
    pub(crate) executions: Counter,
    pub(crate) pending: Gauge,
    pub(crate) inflight: Gauge,
    pub(crate) request_duration: Histogram,
    pub(crate) queue_duration: Histogram,
    pub(crate) compute_input: Histogram,
    pub(crate) compute_infer: Histogram,
    pub(crate) compute_output: Histogram,
    pub(crate) batch_size: Histogram,
    pub(crate) batch_size_limit: Gauge,
    pub(crate) instances_active: Gauge,
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
}

impl Default for VersionMetrics {
    /// Handles that record nothing (metrics off).
    fn default() -> Self {
        VersionMetrics {
            owner: None,
            requests: Default::default(),
            inferences: Counter::noop(),
            executions: Counter::noop(),
            pending: Gauge::noop(),
            inflight: Gauge::noop(),
            request_duration: Histogram::noop(),
            queue_duration: Histogram::noop(),
            compute_input: Histogram::noop(),
            compute_infer: Histogram::noop(),
            compute_output: Histogram::noop(),
            batch_size: Histogram::noop(),
            batch_size_limit: Gauge::noop(),
            instances_active: Gauge::noop(),
            cache_hits: Counter::noop(),
            cache_misses: Counter::noop(),
        }
    }
}

impl std::fmt::Debug for VersionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionMetrics").finish_non_exhaustive()
    }
}

impl VersionMetrics {
    /// The request counter for `protocol` and `code`.
    pub(crate) fn requests(&self, protocol: Protocol, code: tonic::Code) -> &Counter {
        let index = (code as usize).min(16);
        self.requests[protocol as usize][index].get_or_init(|| match &self.owner {
            Some((metrics, model, version)) => {
                let mut labels = Metrics::labels(model, *version);
                labels.push(Label::new("protocol", protocol.as_str()));
                labels.push(Label::new("code", code_name(code)));
                metrics
                    .recorder
                    .register_counter(&Metrics::key(names::REQUESTS, labels), &METADATA)
            }
            None => Counter::noop(),
        })
    }
}

/// The gRPC code as Prometheus label value, in the protocol's spelling.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
