//! What the server exports: every metric's name, kind, unit and help text,
//! the fixed label values, and the histogram buckets. [`super::Metrics`]
//! describes and records them.

use metrics::Unit;

/// Metric names, with the Triton metric each corresponds to (docs/metrics.md).
pub(crate) mod names {
    /// Requests answered, by gRPC code (`nv_inference_request_success` /
    /// `nv_inference_request_failure`).
    pub(crate) const REQUESTS: &str = "oxserve_requests_total";
    /// Rows inferred (`nv_inference_count`).
    pub(crate) const INFERENCES: &str = "oxserve_inferences_total";
    /// Model executions, one per batch (`nv_inference_exec_count`).
    pub(crate) const EXECUTIONS: &str = "oxserve_executions_total";
    /// Requests waiting in the queue (`nv_inference_pending_request_count`).
    pub(crate) const PENDING: &str = "oxserve_pending_requests";
    /// Requests in the server, from arrival to answer (queued or running);
    /// the signal for scaling on load (no Triton counterpart).
    pub(crate) const INFLIGHT: &str = "oxserve_inflight_requests";
    /// Time in the server per request (`nv_inference_request_duration_us`).
    pub(crate) const REQUEST_DURATION: &str = "oxserve_request_duration_seconds";
    /// Time waiting in the queue (`nv_inference_queue_duration_us`).
    pub(crate) const QUEUE_DURATION: &str = "oxserve_queue_duration_seconds";
    /// Input preparation (`nv_inference_compute_input_duration_us`).
    pub(crate) const COMPUTE_INPUT_DURATION: &str = "oxserve_compute_input_duration_seconds";
    /// Model execution (`nv_inference_compute_infer_duration_us`).
    pub(crate) const COMPUTE_INFER_DURATION: &str = "oxserve_compute_infer_duration_seconds";
    /// Output extraction (`nv_inference_compute_output_duration_us`).
    pub(crate) const COMPUTE_OUTPUT_DURATION: &str = "oxserve_compute_output_duration_seconds";
    /// Rows per execution.
    pub(crate) const BATCH_SIZE: &str = "oxserve_batch_size";
    /// Requests answered from the response cache (`nv_cache_num_hits_per_model`).
    pub(crate) const CACHE_HITS: &str = "oxserve_cache_hits_total";
    /// Requests the response cache did not hold (`nv_cache_num_misses_per_model`).
    pub(crate) const CACHE_MISSES: &str = "oxserve_cache_misses_total";
    /// Bytes the response cache holds (`nv_cache_util` × size).
    pub(crate) const CACHE_BYTES: &str = "oxserve_cache_bytes";
    /// Answers the response cache holds (`nv_cache_num_entries`).
    pub(crate) const CACHE_ENTRIES: &str = "oxserve_cache_entries";
    /// The batch size batches are formed with: configured, or picked by
    /// the server (`max_batch_size = auto`).
    pub(crate) const BATCH_SIZE_LIMIT: &str = "oxserve_batch_size_limit";
    /// Instances taking work: all of them, or as many as the load needs
    /// when the server chose them (`instances = auto`).
    pub(crate) const INSTANCES_ACTIVE: &str = "oxserve_instances_active";
    /// Time the last load of a version took (`nv_model_load_duration_secs`).
    pub(crate) const MODEL_LOAD_DURATION: &str = "oxserve_model_load_duration_seconds";
    /// 1 for the state a version is in, 0 for the others.
    pub(crate) const MODEL_STATE: &str = "oxserve_model_state";
    /// Model loads (start, request, poll), by model and outcome
    /// (`nv_model_load_*`).
    pub(crate) const MODEL_LOADS: &str = "oxserve_model_loads_total";
    /// Time each model load took, by outcome.
    pub(crate) const MODEL_LOAD_SECONDS: &str = "oxserve_model_load_seconds";
    /// Model unloads, by model.
    pub(crate) const MODEL_UNLOADS: &str = "oxserve_model_unloads_total";
    /// Inference requests no loaded version could take, by reason
    /// (unknown_model, unknown_version, not_ready); no model label, so
    /// unknown names cannot grow the series.
    pub(crate) const UNROUTABLE: &str = "oxserve_unroutable_requests_total";
    /// Requests refused for their API key, by API group and reason
    /// (missing, malformed, wrong); no Triton counterpart.
    pub(crate) const AUTH_REJECTIONS: &str = "oxserve_auth_rejections_total";
    /// Inference requests refused for the caller's fault, by protocol and
    /// reason ([`super::CLIENT_ERROR_REASONS`]); no model label, so
    /// undecodable requests and unknown names cannot grow the series.
    pub(crate) const CLIENT_ERRORS: &str = "oxserve_client_errors_total";
}

/// Why a request found no version, as the `reason` label of
/// [`names::UNROUTABLE`].
pub(crate) const UNROUTABLE_REASONS: [&str; 3] = ["unknown_model", "unknown_version", "not_ready"];

/// Why a request was the caller's fault, as the `reason` label of
/// [`names::CLIENT_ERRORS`]: `undecodable` (the body is not a valid
/// protobuf message or JSON request), else the gRPC code's name
/// ([`crate::error::client_fault`]).
pub(crate) const CLIENT_ERROR_REASONS: [&str; 8] = [
    "undecodable",
    "invalid_argument",
    "not_found",
    "failed_precondition",
    "out_of_range",
    "already_exists",
    "unauthenticated",
    "permission_denied",
];

/// The states of [`names::MODEL_STATE`].
pub(super) const MODEL_STATES: [&str; 4] = ["loading", "ready", "failed", "unloaded"];

/// Every metric: name, kind, unit and help text, described once.
pub(super) const DESCRIPTIONS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        names::REQUESTS,
        Kind::Counter,
        None,
        "Inference requests answered, by model, version, protocol (grpc or http) and gRPC code.",
    ),
    (
        names::INFERENCES,
        Kind::Counter,
        None,
        "Rows inferred successfully (a request with a batch of N counts N).",
    ),
    (
        names::EXECUTIONS,
        Kind::Counter,
        None,
        "Model executions; one execution runs one batch.",
    ),
    (
        names::PENDING,
        Kind::Gauge,
        None,
        "Requests waiting in the model version's queue.",
    ),
    (
        names::INFLIGHT,
        Kind::Gauge,
        None,
        "Requests in the server for the model version, queued or running.",
    ),
    (
        names::REQUEST_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time from receiving a request to answering it.",
    ),
    (
        names::QUEUE_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time requests waited in the queue before their batch ran.",
    ),
    (
        names::COMPUTE_INPUT_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time building the model's input tensors, per request.",
    ),
    (
        names::COMPUTE_INFER_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time inside ONNX Runtime, per request.",
    ),
    (
        names::COMPUTE_OUTPUT_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time copying outputs into responses, per request.",
    ),
    (
        names::BATCH_SIZE,
        Kind::Histogram,
        Some(Unit::Count),
        "Rows per model execution.",
    ),
    (
        names::CACHE_HITS,
        Kind::Counter,
        None,
        "Requests answered from the response cache, without running the model.",
    ),
    (
        names::CACHE_MISSES,
        Kind::Counter,
        None,
        "Requests to a model with the response cache on that the cache did not hold.",
    ),
    (
        names::CACHE_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes the response cache holds (at most response_cache_size).",
    ),
    (
        names::CACHE_ENTRIES,
        Kind::Gauge,
        None,
        "Answers the response cache holds.",
    ),
    (
        names::BATCH_SIZE_LIMIT,
        Kind::Gauge,
        Some(Unit::Count),
        "The batch size batches are formed with: configured, or picked by the server from execution times.",
    ),
    (
        names::INSTANCES_ACTIVE,
        Kind::Gauge,
        Some(Unit::Count),
        "Instances taking work: every instance, or as many as the load saturates when the server chose them.",
    ),
    (
        names::MODEL_LOAD_DURATION,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Time the last load of the model version took.",
    ),
    (
        names::MODEL_STATE,
        Kind::Gauge,
        None,
        "1 for the model version's current state (loading, ready, failed, unloaded), 0 otherwise; version \"\" is the model as a whole.",
    ),
    (
        names::MODEL_LOADS,
        Kind::Counter,
        None,
        "Model loads and reloads, by model and outcome (success, failure).",
    ),
    (
        names::MODEL_LOAD_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time each model load took (every version it loaded), by outcome.",
    ),
    (
        names::MODEL_UNLOADS,
        Kind::Counter,
        None,
        "Model unloads, by model.",
    ),
    (
        names::UNROUTABLE,
        Kind::Counter,
        None,
        "Inference requests no loaded version could take, by reason (unknown_model, unknown_version, not_ready).",
    ),
    (
        names::AUTH_REJECTIONS,
        Kind::Counter,
        None,
        "Requests refused for their API key, by API group and reason (missing, malformed, wrong).",
    ),
    (
        names::CLIENT_ERRORS,
        Kind::Counter,
        None,
        "Inference requests refused for the caller's fault, by protocol and reason (undecodable, or the gRPC code).",
    ),
];

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Bucket bounds for durations: 50 µs to 10 s.
pub(super) const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Bucket bounds for batch sizes.
pub(super) const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
