//! `POST /v2/models/{m}[/versions/{v}]/infer`: the JSON request (with
//! Triton's binary tensor extension) → `ModelInferRequest` → the core →
//! the JSON response (outputs as JSON arrays, or binary after the header).
//!
//! Binary tensor extension: the body is the JSON header followed by raw
//! tensor bytes, the header's length in `Inference-Header-Content-Length`.
//! An input with `"binary_data_size": N` takes the next N bytes of the
//! tail; outputs asked for with `"binary_data": true` (or every output,
//! with the request parameter `"binary_data_output": true`) come back the
//! same way.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use oxserve_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use oxserve_proto::inference::{InferParameter, ModelInferRequest, ModelInferResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::json::{Data, parameter, parameter_json, read_data};
use super::{Body, Rest, RestError};
use crate::inference::Arrival;
use crate::metrics::Protocol;
use crate::tensor::DataType;

/// The header giving the length of the JSON part of a binary request or
/// response.
pub(super) const HEADER_LENGTH: &str = "inference-header-content-length";
/// Input parameter: this input's bytes follow the JSON.
const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Output parameter: return this output after the JSON.
const BINARY_DATA: &str = "binary_data";
/// Request parameter: return every output after the JSON by default.
const BINARY_DATA_OUTPUT: &str = "binary_data_output";
/// Tensor parameter naming a shared memory region (the data is there).
const SHARED_MEMORY_REGION: &str = "shared_memory_region";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferBody<'a> {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow)]
    inputs: Vec<InputBody<'a>>,
    #[serde(default)]
    outputs: Vec<OutputBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputBody<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputBody {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

pub(super) async fn infer(
    State(rest): State<Rest>,
    Path(model): Path<String>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    answer(rest, model, String::new(), arrival, &headers, body).await
}

pub(super) async fn infer_version(
    State(rest): State<Rest>,
    Path((model, version)): Path<(String, String)>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    answer(rest, model, version, arrival, &headers, body).await
}

async fn answer(
    rest: Rest,
    model: String,
    version: String,
    arrival: Arrival,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let (request, binary) = match parse(model, version, headers, body) {
        Ok(parsed) => parsed,
        Err(error) => {
            // A body that is no inference request (as gRPC's undecodable
            // message): the caller's fault, counted, not logged.
            if let Some(metrics) = rest.core.repository().metrics() {
                metrics.client_error(Protocol::Http, "undecodable");
            }
            return error.into_response();
        }
    };
    let id = request.id.clone();
    match rest.core.infer(request, arrival).await {
        Ok(response) => respond(response, &binary).unwrap_or_else(IntoResponse::into_response),
        Err(error) => RestError::from_core(error, &id).into_response(),
    }
}

/// The request a REST body holds (`header_length`: the binary tensor
/// extension's header), or the error message: the parsing step of
/// [`answer`], for fuzzing (`crate::fuzzing`).
pub(crate) fn parse_body(
    body: Bytes,
    header_length: Option<usize>,
) -> Result<ModelInferRequest, String> {
    let mut headers = HeaderMap::new();
    if let Some(n) = header_length {
        headers.insert(HEADER_LENGTH, HeaderValue::from(n));
    }
    parse("m".to_string(), String::new(), &headers, body)
        .map(|(request, _)| request)
        .map_err(|e| e.message)
}

/// Which outputs go back after the JSON.
struct BinaryOutputs {
    default: bool,
    named: HashMap<String, bool>,
}

impl BinaryOutputs {
    fn wants(&self, name: &str) -> bool {
        self.named.get(name).copied().unwrap_or(self.default)
    }
}

/// A tensor's or request's parameters, for the core; and those the
/// transport itself reads (`transport`), kept as JSON.
type Split = (HashMap<String, InferParameter>, Map<String, Value>);

fn parameters(
    what: &str,
    json: Map<String, Value>,
    transport: &[&str],
) -> Result<Split, RestError> {
    let mut out = HashMap::with_capacity(json.len());
    let mut own = Map::new();
    for (name, value) in json {
        if transport.contains(&name.as_str()) {
            own.insert(name, value);
        } else {
            let p = parameter(&name, &value)
                .map_err(|e| RestError::bad_request(format!("{what}: {e}")))?;
            out.insert(name, p);
        }
    }
    Ok((out, own))
}

fn flag(what: &str, name: &str, own: &Map<String, Value>) -> Result<Option<bool>, RestError> {
    match own.get(name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RestError::bad_request(format!(
            "{what}: parameter '{name}' must be a bool"
        ))),
    }
}

/// The request body as the core's request, and which outputs to return
/// in binary.
fn parse(
    model_name: String,
    model_version: String,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(ModelInferRequest, BinaryOutputs), RestError> {
    let header_length = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n <= body.len())
            .ok_or_else(|| {
                RestError::bad_request(format!(
                    "{HEADER_LENGTH} must be a number of bytes no larger than the body ({})",
                    body.len()
                ))
            })?,
    };
    let text = std::str::from_utf8(&body[..header_length])
        .map_err(|e| RestError::bad_request(format!("the JSON request is not UTF-8: {e}")))?;
    let parsed: InferBody<'_> = serde_json::from_str(text)
        .map_err(|e| RestError::bad_request(format!("malformed inference request: {e}")))?;
    let mut tail = body.slice(header_length..);

    let (parameters_in, own) = parameters("request", parsed.parameters, &[BINARY_DATA_OUTPUT])?;
    let mut binary = BinaryOutputs {
        default: flag("request", BINARY_DATA_OUTPUT, &own)?.unwrap_or(false),
        named: HashMap::new(),
    };

    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    let mut raw = Vec::with_capacity(parsed.inputs.len());
    for input in parsed.inputs {
        let what = format!("input '{}'", input.name);
        let (parameters, own) = parameters(&what, input.parameters, &[BINARY_DATA_SIZE])?;
        let binary_size = match own.get(BINARY_DATA_SIZE) {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        RestError::bad_request(format!(
                            "{what}: '{BINARY_DATA_SIZE}' must be a number of bytes"
                        ))
                    })?,
            ),
        };
        let in_shared_memory = parameters.contains_key(SHARED_MEMORY_REGION);
        let data = match (input.data, binary_size, in_shared_memory) {
            (None, None, true) => None,
            (Some(data), None, false) => Some(match DataType::parse(&input.datatype) {
                Some(datatype) => Bytes::from(
                    read_data(datatype, data.get())
                        .map_err(|e| RestError::bad_request(format!("{what}: {e}")))?,
                ),
                // The core names the datatypes it knows.
                None => Bytes::new(),
            }),
            (None, Some(size), false) => {
                if size > tail.len() {
                    return Err(RestError::bad_request(format!(
                        "{what}: '{BINARY_DATA_SIZE}' is {size}, but only {} bytes of binary data are left",
                        tail.len()
                    )));
                }
                Some(tail.split_to(size))
            }
            (None, None, false) => {
                return Err(RestError::bad_request(format!(
                    "{what} has no data: give \"data\", \"{BINARY_DATA_SIZE}\" or \"{SHARED_MEMORY_REGION}\""
                )));
            }
            (Some(_), _, _) | (None, Some(_), true) => {
                return Err(RestError::bad_request(format!(
                    "{what} has its data in more than one place: give one of \"data\", \"{BINARY_DATA_SIZE}\" and \"{SHARED_MEMORY_REGION}\""
                )));
            }
        };
        raw.extend(data);
        inputs.push(InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            parameters,
            contents: None,
        });
    }
    if !tail.is_empty() {
        return Err(RestError::bad_request(format!(
            "{} bytes of binary data follow the JSON, but no input takes them",
            tail.len()
        )));
    }

    let mut outputs = Vec::with_capacity(parsed.outputs.len());
    for output in parsed.outputs {
        let what = format!("output '{}'", output.name);
        let (parameters, own) = parameters(&what, output.parameters, &[BINARY_DATA])?;
        if let Some(wanted) = flag(&what, BINARY_DATA, &own)? {
            binary.named.insert(output.name.clone(), wanted);
        }
        outputs.push(InferRequestedOutputTensor {
            name: output.name,
            parameters,
        });
    }
    let request = ModelInferRequest {
        model_name,
        model_version,
        id: parsed.id,
        parameters: parameters_in,
        inputs,
        outputs,
        raw_input_contents: raw,
    };
    Ok((request, binary))
}

/// The response's JSON, written straight from the response (numbers keep
/// their own type's shortest form: an FP32 0.1 is written `0.1`).
#[derive(serde::Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    outputs: Vec<OutputJson<'a>>,
}

#[derive(serde::Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

/// The response: JSON, then the binary outputs, if any.
fn respond(response: ModelInferResponse, binary: &BinaryOutputs) -> Result<Response, RestError> {
    let mut tail: Vec<Bytes> = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for (output, raw) in response.outputs.iter().zip(&response.raw_output_contents) {
        let mut parameters: Map<String, Value> = output
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), parameter_json(v)))
            .collect();
        let mut data = None;
        if output.parameters.contains_key(SHARED_MEMORY_REGION) {
            // Written to the region: nothing travels in the response, and
            // no parameters either, as Triton answers (perf_analyzer reads
            // an output's parameters as binary data when they are there).
            parameters.clear();
        } else if binary.wants(&output.name) {
            parameters.insert(BINARY_DATA_SIZE.into(), Value::from(raw.len()));
            tail.push(raw.clone());
        } else {
            let datatype = DataType::parse(&output.datatype).ok_or_else(|| {
                RestError::new(
                    tonic::Code::Internal,
                    format!("output '{}' has an unknown datatype", output.name),
                )
            })?;
            let json = Data { datatype, raw };
            json.check()
                .map_err(|e| RestError::bad_request(format!("output '{}': {e}", output.name)))?;
            data = Some(json);
        }
        outputs.push(OutputJson {
            name: &output.name,
            datatype: &output.datatype,
            shape: &output.shape,
            parameters: (!parameters.is_empty()).then_some(parameters),
            data,
        });
    }
    let body = ResponseJson {
        model_name: &response.model_name,
        model_version: &response.model_version,
        id: (!response.id.is_empty()).then_some(&response.id),
        parameters: (!response.parameters.is_empty()).then(|| {
            response
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), parameter_json(v)))
                .collect()
        }),
        outputs,
    };
    let json = serde_json::to_vec(&body)
        .map_err(|e| RestError::new(tonic::Code::Internal, e.to_string()))?;
    let json_length = json.len();
    let binary = !tail.is_empty();
    let mut parts = Vec::with_capacity(1 + tail.len());
    parts.push(Bytes::from(json));
    parts.extend(tail);
    let mut response = Response::new(axum::body::Body::new(Parts::new(parts)));
    let headers = response.headers_mut();
    if binary {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(HEADER_LENGTH, HeaderValue::from(json_length));
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(response)
}

/// A body sent as the buffers it is made of, so binary outputs go out
/// without being copied into one buffer; its exact length is known, so it
/// is sent with a `Content-Length`.
struct Parts {
    parts: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Parts {
    fn new(parts: Vec<Bytes>) -> Parts {
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        Parts {
            parts: parts.into(),
            remaining,
        }
    }
}

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.parts.pop_front();
        if let Some(part) = &next {
            self.remaining -= part.len() as u64;
        }
        std::task::Poll::Ready(next.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}
