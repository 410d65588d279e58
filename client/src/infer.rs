//! Building a typed inference request.

use std::time::Duration;

use bytes::Bytes;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

use crate::{
    Client, DataType, Element, Error, InferResponse, Result,
    client::Call,
    codec,
    pb::{
        self, InferParameter,
        model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
    },
};

/// A `ModelInfer` request being built; from [`Client::infer`].
///
/// Every input is sent raw (`raw_input_contents`), the encoding reference
/// servers handle fastest. Mistakes in the inputs (an element count that
/// does not match the shape, a repeated name) are reported by
/// [`send`](InferBuilder::send) or [`build`](InferBuilder::build) as
/// [`Error::Mismatch`], so the calls chain without `?` at every step.
///
/// ```no_run
/// # async fn run(client: oxserve_client::Client) -> oxserve_client::Result<()> {
/// let pixels = vec![0.0f32; 784];
/// let response = client
///     .infer("mlp")
///     .version("1")
///     .id("req-1")
///     .input("input", [1, 784], &pixels)
///     .output("output")
///     .send()
///     .await?;
/// let scores = response.output("output").expect("asked for it").as_f32()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "an inference request does nothing until `send` is awaited"]
pub struct InferBuilder {
    client: Client,
    request: pb::ModelInferRequest,
    timeout: Option<Duration>,
    /// Whether the request may be retried; `None`: the client's policy.
    idempotent: Option<bool>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// The first mistake made while building, reported by `build`/`send`.
    error: Option<Mistake>,
}

/// A mistake in building a request; an [`Error`] is not `Clone`.
#[derive(Clone, Debug)]
enum Mistake {
    Mismatch(String),
    Config(String),
}

impl From<Mistake> for Error {
    fn from(mistake: Mistake) -> Self {
        match mistake {
            Mistake::Mismatch(message) => Error::Mismatch(message),
            Mistake::Config(message) => Error::Config(message),
        }
    }
}

impl InferBuilder {
    pub(crate) fn new(client: Client, model: String) -> Self {
        let timeout = client.timeout();
        InferBuilder {
            client,
            request: pb::ModelInferRequest {
                model_name: model,
                ..Default::default()
            },
            timeout,
            idempotent: None,
            headers: Vec::new(),
            error: None,
        }
    }

    /// Asks for one version of the model. Default: the server's choice,
    /// normally the highest ready version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.request.model_version = version.into();
        self
    }

    /// Sets the request id, which the server echoes in the response and its
    /// error messages.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.request.id = id.into();
        self
    }

    /// Sets a request parameter, such as the reserved `priority` (`i64`) or
    /// `timeout` (`i64` microseconds).
    pub fn parameter(mut self, key: impl Into<String>, value: impl Into<InferParameter>) -> Self {
        self.request.parameters.insert(key.into(), value.into());
        self
    }

    /// Overrides the client's per-request timeout for this request (`None`:
    /// no limit).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether this request may be retried on `UNAVAILABLE`. Default: as
    /// the client's [`RetryPolicy`](crate::RetryPolicy) says, and never for
    /// a request with a `sequence_id` parameter.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Adds a metadata header to this request only (on top of the
    /// client's); an invalid name or value is an [`Error::Config`].
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let key = AsciiMetadataKey::from_bytes(name.as_bytes());
        let parsed = AsciiMetadataValue::try_from(value);
        match (key, parsed) {
            (Ok(key), Ok(value)) => {
                self.headers.push((key, value));
                self
            }
            _ => self.fail_with(Mistake::Config(format!(
                "invalid header '{name}: {value}' (names are lower-case ASCII, values visible ASCII)"
            ))),
        }
    }

    /// Adds an input tensor of fixed-size elements; `data` is flat,
    /// row-major, and must hold exactly the product of `shape` elements.
    /// The shape is any list of `i64`: `[1, 784]`, `&[1, 784]`, a `Vec`.
    pub fn input<T: Element>(
        self,
        name: impl Into<String>,
        shape: impl AsRef<[i64]>,
        data: &[T],
    ) -> Self {
        let name = name.into();
        let shape = shape.as_ref();
        match self.check_count(&name, shape, data.len()) {
            Ok(()) => self.push_input(name, T::DATATYPE, shape, codec::encode(data).into()),
            Err(message) => self.fail(message),
        }
    }

    /// Adds a `BYTES` input tensor, one element per item of `data` (strings
    /// work too: `&[&str]`).
    pub fn input_bytes<B: AsRef<[u8]>>(
        self,
        name: impl Into<String>,
        shape: impl AsRef<[i64]>,
        data: &[B],
    ) -> Self {
        let name = name.into();
        let shape = shape.as_ref();
        let encoded = self.check_count(&name, shape, data.len()).and_then(|()| {
            codec::encode_bytes_shared(data).map_err(|e| format!("input '{name}': {e}"))
        });
        match encoded {
            Ok(raw) => self.push_input(name, DataType::Bytes, shape, raw),
            Err(message) => self.fail(message),
        }
    }

    /// Adds an input tensor already in the raw encoding, for any datatype;
    /// this is how `FP16` and `BF16` are sent. The bytes are checked to be
    /// exactly `shape`'s element count (for `BYTES`, a well-formed stream of
    /// that many elements); to send malformed data on purpose, build a
    /// [`pb::ModelInferRequest`] and use [`Client::infer_raw`].
    pub fn input_raw(
        self,
        name: impl Into<String>,
        datatype: DataType,
        shape: impl AsRef<[i64]>,
        bytes: Vec<u8>,
    ) -> Self {
        let name = name.into();
        let shape = shape.as_ref();
        let checked = shape_count(&name, shape).and_then(|count| {
            codec::validate_raw(datatype, &bytes, count).map_err(|e| format!("input '{name}': {e}"))
        });
        match checked {
            Ok(()) => self.push_input(name, datatype, shape, bytes.into()),
            Err(message) => self.fail(message),
        }
    }

    /// Asks for one output by name. Without any, the server returns all of
    /// the model's outputs.
    pub fn output(mut self, name: impl Into<String>) -> Self {
        self.request.outputs.push(InferRequestedOutputTensor {
            name: name.into(),
            parameters: Default::default(),
        });
        self
    }

    /// The wire message this builder would send, for inspection or for
    /// tweaking before [`Client::infer_raw`].
    ///
    /// # Errors
    /// [`Error::Mismatch`] describing the first mistake in the inputs.
    pub fn build(self) -> Result<pb::ModelInferRequest> {
        match self.error {
            Some(mistake) => Err(mistake.into()),
            None => Ok(self.request),
        }
    }

    /// Sends the request and waits for the response.
    ///
    /// # Errors
    /// [`Error::Mismatch`] for a mistake in the inputs (nothing is sent);
    /// [`Error::Status`] if the server or transport fails the call.
    pub async fn send(self) -> Result<InferResponse> {
        if let Some(mistake) = self.error {
            return Err(mistake.into());
        }
        let retry = self
            .idempotent
            .unwrap_or_else(|| self.client.may_retry_inference(&self.request));
        let call = Call {
            timeout: self.timeout,
            retry,
            headers: &self.headers,
        };
        let response = self.client.infer_with(self.request, call).await?;
        Ok(InferResponse::from(response))
    }

    fn check_count(&self, name: &str, shape: &[i64], len: usize) -> Result<(), String> {
        let count = shape_count(name, shape)?;
        if count == len {
            Ok(())
        } else {
            Err(format!(
                "input '{name}': shape {shape:?} holds {count} elements, got {len}"
            ))
        }
    }

    fn push_input(mut self, name: String, datatype: DataType, shape: &[i64], raw: Bytes) -> Self {
        if self.request.inputs.iter().any(|input| input.name == name) {
            return self.fail(format!("input '{name}' given more than once"));
        }
        self.request.inputs.push(InferInputTensor {
            name,
            datatype: datatype.as_str().to_owned(),
            shape: shape.to_vec(),
            parameters: Default::default(),
            contents: None,
        });
        self.request.raw_input_contents.push(raw);
        self
    }

    fn fail(self, message: String) -> Self {
        self.fail_with(Mistake::Mismatch(message))
    }

    fn fail_with(mut self, mistake: Mistake) -> Self {
        self.error.get_or_insert(mistake);
        self
    }
}

fn shape_count(name: &str, shape: &[i64]) -> Result<usize, String> {
    codec::element_count(shape).ok_or_else(|| {
        format!("input '{name}': shape {shape:?} has a negative dimension or too many elements")
    })
}

#[cfg(test)]
mod tests;
