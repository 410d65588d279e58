//! Every REST endpoint but inference: health, metadata, configuration,
//! statistics, shared memory, log and trace settings. Each is a thin
//! handler over what the gRPC handlers call, answering JSON.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use oxserve_proto::inference::{ModelConfigResponse, ModelStatisticsResponse};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tonic::Code;

use super::{Body, Rest, RestError};
use crate::inference::EXTENSIONS;
use crate::logging::{self, LogSettings, LogValue};
use crate::model_config::PLATFORM;
use crate::shm::{RegionStatus, ShmError};
use crate::tensor::TensorSpec;
use crate::trace::TraceSettings;

pub(super) type Answer = Result<Response, RestError>;

pub(super) fn ok(body: Value) -> Answer {
    Ok(Json(body).into_response())
}

pub(super) async fn live() -> Response {
    // Answering at all is being live.
    Json(json!({ "live": true })).into_response()
}

/// 200 when ready; 400 otherwise (a 4xx, as the protocol says), readiness
/// off while draining exactly as over gRPC.
pub(super) async fn ready(State(rest): State<Rest>) -> Response {
    readiness(&rest.health)
}

/// The answer of `/v2/health/ready` for `health`.
pub(super) fn readiness(health: &crate::health::Health) -> Response {
    let ready = health.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

pub(super) async fn server_metadata() -> Response {
    Json(json!({
        "name": "oxserve",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
    .into_response()
}

fn tensors(specs: &[TensorSpec]) -> Vec<Value> {
    specs
        .iter()
        .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.dims }))
        .collect()
}

fn metadata(rest: &Rest, model: &str, version: &str) -> Answer {
    let repository = rest.core.repository();
    let loaded = repository.get(model, version)?;
    let versions: Vec<String> = repository
        .ready_versions(&loaded.model)
        .iter()
        .map(u64::to_string)
        .collect();
    ok(json!({
        "name": loaded.model,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": tensors(&loaded.spec.inputs),
        "outputs": tensors(&loaded.spec.outputs),
    }))
}

pub(super) async fn model_metadata(State(rest): State<Rest>, Path(model): Path<String>) -> Answer {
    metadata(&rest, &model, "")
}

pub(super) async fn model_metadata_version(
    State(rest): State<Rest>,
    Path((model, version)): Path<(String, String)>,
) -> Answer {
    metadata(&rest, &model, &version)
}

/// 200 when the version is ready; 400 otherwise.
fn model_readiness(rest: &Rest, model: &str, version: &str) -> Response {
    let ready = rest.core.repository().get(model, version).is_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "name": model, "ready": ready }))).into_response()
}

pub(super) async fn model_ready(State(rest): State<Rest>, Path(model): Path<String>) -> Response {
    model_readiness(&rest, &model, "")
}

pub(super) async fn model_ready_version(
    State(rest): State<Rest>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    model_readiness(&rest, &model, &version)
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(oxserve_proto::FILE_DESCRIPTOR_SET)
        .expect("the protocol crate's descriptor set decodes (it is built from the same protos)")
});

/// A protocol message as Triton's JSON: field names as in the .proto,
/// every field present, 64-bit integers as numbers.
pub(super) fn message_json<M: prost::Message>(name: &str, message: &M) -> Result<Value, RestError> {
    let internal = |e: String| RestError::new(Code::Internal, e);
    let descriptor = POOL
        .get_message_by_name(name)
        .ok_or_else(|| internal(format!("no descriptor for {name}")))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| internal(e.to_string()))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| internal(e.to_string()))
}

fn config(rest: &Rest, model: &str, version: &str) -> Answer {
    let loaded = rest.core.repository().get(model, version)?;
    let response = ModelConfigResponse {
        config: Some(loaded.config.clone()),
    };
    // Triton answers the configuration itself, not wrapped in `config`.
    let mut body = message_json("inference.ModelConfigResponse", &response)?;
    ok(body["config"].take())
}

pub(super) async fn model_config(State(rest): State<Rest>, Path(model): Path<String>) -> Answer {
    config(&rest, &model, "")
}

pub(super) async fn model_config_version(
    State(rest): State<Rest>,
    Path((model, version)): Path<(String, String)>,
) -> Answer {
    config(&rest, &model, &version)
}

fn stats(rest: &Rest, model: &str, version: &str) -> Answer {
    let model_stats = rest.core.repository().statistics(model, version)?;
    let response = ModelStatisticsResponse { model_stats };
    ok(message_json(
        "inference.ModelStatisticsResponse",
        &response,
    )?)
}

pub(super) async fn all_stats(State(rest): State<Rest>) -> Answer {
    stats(&rest, "", "")
}

pub(super) async fn model_stats(State(rest): State<Rest>, Path(model): Path<String>) -> Answer {
    stats(&rest, &model, "")
}

pub(super) async fn model_stats_version(
    State(rest): State<Rest>,
    Path((model, version)): Path<(String, String)>,
) -> Answer {
    stats(&rest, &model, &version)
}

fn shm_error(e: ShmError) -> RestError {
    RestError::new(e.code(), e.to_string())
}

fn region_json(r: RegionStatus) -> Value {
    json!({ "name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size })
}

fn shm_statuses(rest: &Rest, name: &str) -> Answer {
    let regions = rest.core.shared_memory().status(name).map_err(shm_error)?;
    ok(Value::Array(regions.into_iter().map(region_json).collect()))
}

pub(super) async fn shm_status_all(State(rest): State<Rest>) -> Answer {
    shm_statuses(&rest, "")
}

pub(super) async fn shm_status(State(rest): State<Rest>, Path(name): Path<String>) -> Answer {
    shm_statuses(&rest, &name)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Register {
    key: String,
    #[serde(default)]
    offset: u64,
    byte_size: u64,
}

/// A JSON body, or the protocol's error for a malformed one.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RestError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RestError::bad_request(format!("malformed request: {e}")))
}

pub(super) async fn shm_register(
    State(rest): State<Rest>,
    Path(name): Path<String>,
    Body(bytes): Body,
) -> Answer {
    let r: Register = parse_body(&bytes)?;
    rest.core
        .shared_memory()
        .register(&name, &r.key, r.offset, r.byte_size)
        .map_err(shm_error)?;
    ok(json!({}))
}

pub(super) async fn shm_unregister_all(State(rest): State<Rest>) -> Answer {
    rest.core.shared_memory().unregister("");
    ok(json!({}))
}

pub(super) async fn shm_unregister(State(rest): State<Rest>, Path(name): Path<String>) -> Answer {
    rest.core.shared_memory().unregister(&name);
    ok(json!({}))
}

pub(super) async fn cuda_status_all() -> Answer {
    // Nothing can be registered, so there is nothing to report.
    ok(json!([]))
}

pub(super) async fn cuda_status(Path(name): Path<String>) -> Answer {
    Err(shm_error(ShmError::UnknownRegion { name }))
}

pub(super) async fn cuda_register() -> Answer {
    Err(shm_error(ShmError::CudaUnavailable))
}

pub(super) async fn cuda_unregister() -> Answer {
    ok(json!({}))
}

fn log_json(settings: LogSettings) -> Value {
    Value::Object(
        settings
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    LogValue::Bool(b) => Value::from(b),
                    LogValue::Uint(n) => Value::from(n),
                    LogValue::Text(s) => Value::from(s),
                };
                (k, v)
            })
            .collect(),
    )
}

fn log_error(e: logging::LogError) -> RestError {
    RestError::new(e.code(), e.to_string())
}

pub(super) async fn log_settings() -> Answer {
    ok(log_json(logging::settings().map_err(log_error)?))
}

pub(super) async fn update_log_settings(Body(bytes): Body) -> Answer {
    let changes: Map<String, Value> = parse_body(&bytes)?;
    let mut settings = LogSettings::new();
    for (name, value) in changes {
        let value = match value {
            Value::Bool(b) => LogValue::Bool(b),
            Value::String(s) => LogValue::Text(s),
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => LogValue::Uint(n),
                None => {
                    return Err(RestError::bad_request(format!(
                        "log setting '{name}': {n} is not an unsigned 32-bit number"
                    )));
                }
            },
            Value::Null | Value::Array(_) | Value::Object(_) => {
                return Err(RestError::bad_request(format!(
                    "log setting '{name}' must be a bool, a number or a string"
                )));
            }
        };
        settings.insert(name, value);
    }
    ok(log_json(logging::update(&settings).map_err(log_error)?))
}

/// Trace settings as Triton's REST API writes them: `trace_level` a list,
/// the others a single string.
fn trace_json(settings: TraceSettings) -> Value {
    Value::Object(
        settings
            .into_iter()
            .map(|(name, mut values)| {
                let value = if name == "trace_level" || values.len() != 1 {
                    Value::from(values)
                } else {
                    Value::from(values.remove(0))
                };
                (name, value)
            })
            .collect(),
    )
}

fn trace_changes(bytes: &[u8]) -> Result<TraceSettings, RestError> {
    let changes: Map<String, Value> = parse_body(bytes)?;
    let mut out = TraceSettings::new();
    for (name, value) in changes {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
        };
        let values = match &value {
            // null clears the setting back to its start-up value.
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(text)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    RestError::bad_request(format!(
                        "trace setting '{name}': values must be strings"
                    ))
                })?,
            other @ (Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Object(_)) => {
                vec![text(other).ok_or_else(|| {
                    RestError::bad_request(format!(
                        "trace setting '{name}' must be a string, a list of strings or null"
                    ))
                })?]
            }
        };
        out.insert(name, values);
    }
    Ok(out)
}

fn update_traces(rest: &Rest, model: &str, bytes: &[u8]) -> Answer {
    let changes = trace_changes(bytes)?;
    let settings = rest
        .core
        .traces()
        .update(model, &changes)
        .map_err(|e| RestError::bad_request(e.to_string()))?;
    ok(trace_json(settings))
}

pub(super) async fn trace_settings(State(rest): State<Rest>) -> Answer {
    ok(trace_json(rest.core.traces().settings()))
}

pub(super) async fn update_trace_settings(State(rest): State<Rest>, Body(bytes): Body) -> Answer {
    update_traces(&rest, "", &bytes)
}

/// A model's settings are the server's: none are kept per model.
pub(super) async fn model_trace_settings(
    State(rest): State<Rest>,
    Path(model): Path<String>,
) -> Answer {
    rest.core.repository().get(&model, "")?;
    ok(trace_json(rest.core.traces().settings()))
}

pub(super) async fn update_model_trace_settings(
    State(rest): State<Rest>,
    Path(model): Path<String>,
    Body(bytes): Body,
) -> Answer {
    update_traces(&rest, &model, &bytes)
}

pub(super) async fn no_route(uri: http::Uri) -> RestError {
    RestError::new(
        Code::NotFound,
        format!(
            "no endpoint at {}; the API is under /v2 (docs/rest.md)",
            uri.path()
        ),
    )
}
