//! The one request path every transport calls: find the model version,
//! apply the deadline, validate, queue, answer, and account for the request
//! exactly once, whatever its outcome.
//!
//! Transports are thin adapters: they turn their wire format into a
//! `ModelInferRequest` and an [`Arrival`], call [`Inference::infer`], and
//! map an [`Error`] to their own status with [`Error::code`].

mod deadline;

use std::sync::Arc;

use oxserve_proto::inference::{ModelInferRequest, ModelInferResponse};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::Error;
use crate::repository::{LoadedVersion, Repository};
use crate::tensor::{decode_request, encode_outputs};

pub(crate) use deadline::timeout_parameter;

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
}

impl Inference {
    /// The core answering from `repository`.
    pub(crate) fn new(repository: Arc<Repository>) -> Inference {
        Inference { repository }
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
                .get(&request.model_name, &request.model_version)?;
            tracing::Span::current().record("version", loaded.version);
            let record = loaded.stats.begin(arrival.received);
            let result = run(&loaded, request, arrival).await;
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

/// Validates, queues and answers `request` on `loaded` before its deadline.
async fn run(
    loaded: &LoadedVersion,
    request: ModelInferRequest,
    arrival: Arrival,
) -> Result<ModelInferResponse, Error> {
    let timeout = timeout_parameter(&loaded.model, &request.parameters)?;
    let deadline = loaded.deadline(arrival.received, arrival.deadline, timeout);
    let work = async {
        let decoded = decode_request(&loaded.spec, &request)?;
        loaded.infer(decoded).await
    };
    let outputs = match deadline {
        None => work.await?,
        // Whatever stage the request is in when the deadline passes, this
        // answers; a request still queued leaves the queue unexecuted.
        Some(deadline) => tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| Error::DeadlineExceeded {
                model: loaded.model.clone(),
                version: loaded.version.to_string(),
            })??,
    };
    let (outputs, raw_output_contents) = encode_outputs(outputs);
    Ok(ModelInferResponse {
        model_name: loaded.model.clone(),
        model_version: loaded.version.to_string(),
        id: request.id,
        parameters: Default::default(),
        outputs,
        raw_output_contents,
    })
}
