//! The repository endpoints: `POST /v2/repository/index` and
//! `POST /v2/repository/models/{model}/load|unload`, over the calls the
//! gRPC repository RPCs make.
//!
//! A load's parameters are JSON values: `config` a string holding a JSON
//! model configuration, `file:<version>/<name>` the file's bytes in base64
//! (as tritonclient.http sends them).

use std::collections::HashMap;

use axum::extract::{Path, State};
use base64::Engine;
use oxserve_proto::inference::model_repository_parameter::ParameterChoice;
use oxserve_proto::inference::{ModelRepositoryParameter, RepositoryIndexResponse};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::admin::{Answer, message_json, ok, parse_body};
use super::{Body, Rest, RestError};
use crate::repository::LoadRequest;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IndexBody {
    #[serde(default)]
    ready: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ModelBody {
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A body that may be empty (all its fields have defaults).
fn optional<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, RestError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_body(bytes)
    }
}

pub(super) async fn index(State(rest): State<Rest>, Body(bytes): Body) -> Answer {
    let body: IndexBody = optional(&bytes)?;
    let models = rest.core.repository().index(body.ready);
    let mut json = message_json(
        "inference.RepositoryIndexResponse",
        &RepositoryIndexResponse { models },
    )?;
    // Triton answers the list itself.
    ok(json["models"].take())
}

fn load_parameters(
    model: &str,
    json: Map<String, Value>,
) -> Result<HashMap<String, ModelRepositoryParameter>, RestError> {
    let bad = |name: &str, reason: &str| {
        RestError::bad_request(format!(
            "load of model '{model}': parameter '{name}' {reason}"
        ))
    };
    let mut out = HashMap::with_capacity(json.len());
    for (name, value) in json {
        let choice = match (name.starts_with("file:"), value) {
            (true, Value::String(b64)) => ParameterChoice::BytesParam(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| bad(&name, &format!("is not base64: {e}")))?
                    .into(),
            ),
            (true, _) => return Err(bad(&name, "must be the file's bytes in base64")),
            (false, Value::String(s)) => ParameterChoice::StringParam(s),
            (false, Value::Bool(b)) => ParameterChoice::BoolParam(b),
            (false, Value::Number(n)) => ParameterChoice::Int64Param(
                n.as_i64()
                    .ok_or_else(|| bad(&name, "must be a whole number"))?,
            ),
            (false, Value::Null | Value::Array(_) | Value::Object(_)) => {
                return Err(bad(&name, "must be a bool, a number or a string"));
            }
        };
        out.insert(
            name,
            ModelRepositoryParameter {
                parameter_choice: Some(choice),
            },
        );
    }
    Ok(out)
}

pub(super) async fn load(
    State(rest): State<Rest>,
    Path(model): Path<String>,
    Body(bytes): Body,
) -> Answer {
    let body: ModelBody = optional(&bytes)?;
    let parameters = load_parameters(&model, body.parameters)?;
    let load = LoadRequest::from_parameters(&model, &parameters)?;
    rest.core.repository().load_by_request(&model, load).await?;
    ok(serde_json::json!({}))
}

pub(super) async fn unload(
    State(rest): State<Rest>,
    Path(model): Path<String>,
    Body(bytes): Body,
) -> Answer {
    // `unload_dependents` is accepted: without ensembles, nothing depends
    // on a model.
    let _: ModelBody = optional(&bytes)?;
    rest.core.repository().unload_by_request(&model).await?;
    ok(serde_json::json!({}))
}
