//! The server's request-time errors, and the one mapping from each to the
//! gRPC code clients expect (PROTOCOL.md's error table). Every transport
//! answers with that code, or (REST) with the HTTP status derived from it.

use tonic::Code;

use crate::scheduler::ExecError;
use crate::shm::ShmError;
use crate::tensor::InvalidInput;

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No model of that name in the repository.
    #[error("Request for unknown model: '{model}' is not found")]
    ModelNotFound {
        /// Name asked for.
        model: String,
    },
    /// The model exists, but not that version.
    #[error(
        "Request for unknown model: '{model}' version {version} is not found; available versions: {available}"
    )]
    VersionNotFound {
        /// Model name.
        model: String,
        /// Version asked for.
        version: String,
        /// The versions the version policy loaded, listed.
        available: String,
    },
    /// The model or version exists but cannot serve (still loading, or its
    /// load failed).
    #[error("model '{model}'{} is not ready: {reason}", version_suffix(.version))]
    ModelUnavailable {
        /// Model name.
        model: String,
        /// Version, if one was named or chosen.
        version: Option<String>,
        /// Why: loading, or the load error.
        reason: String,
    },
    /// The request does not fit the model or the protocol.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// A request parameter with a value of the wrong kind.
    #[error("model '{model}': request parameter '{parameter}' {reason}")]
    InvalidParameter {
        /// Model name.
        model: String,
        /// The parameter.
        parameter: &'static str,
        /// What it must be.
        reason: String,
    },
    /// The model version's queue is full.
    #[error(
        "Exceeds maximum queue size: model '{model}' version {version} has {capacity} requests waiting"
    )]
    QueueFull {
        /// Model name.
        model: String,
        /// Version.
        version: String,
        /// Queue capacity.
        capacity: usize,
    },
    /// The model version stopped while the request waited (server shutting
    /// down or model unloaded).
    #[error("model '{model}' version {version} is shutting down")]
    Stopped {
        /// Model name.
        model: String,
        /// Version.
        version: String,
    },
    /// The request's deadline passed before it ran.
    #[error(
        "model '{model}' version {version}: the request's deadline passed before it was answered"
    )]
    DeadlineExceeded {
        /// Model name.
        model: String,
        /// Version.
        version: String,
    },
    /// A tensor names a shared memory region that is missing, or a range
    /// outside it.
    #[error(transparent)]
    SharedMemory(#[from] ShmError),
    /// ONNX Runtime failed on a request that passed validation.
    #[error("model '{model}' version {version}: {source}")]
    Inference {
        /// Model name.
        model: String,
        /// Version.
        version: String,
        /// What ONNX Runtime said.
        source: ExecError,
    },
}

impl Error {
    /// The gRPC code for this error. No catch-all arm: a new variant must be
    /// given its code here to compile.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub(crate) fn code(&self) -> Code {
        match self {
            Error::ModelNotFound { .. } | Error::VersionNotFound { .. } => Code::NotFound,
            Error::ModelUnavailable { .. } => Code::Unavailable,
            Error::InvalidInput(_) | Error::InvalidParameter { .. } => Code::InvalidArgument,
            // Documented: a full queue is UNAVAILABLE, as Triton answers, so
            // that clients with retry policies try another replica.
            Error::QueueFull { .. } => Code::Unavailable,
            Error::Stopped { .. } => Code::Unavailable,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Inference { .. } => Code::Internal,
            Error::SharedMemory(e) => e.code(),
        }
    }
}

fn version_suffix(version: &Option<String>) -> String {
    version
        .as_ref()
        .map(|v| format!(" version {v}"))
        .unwrap_or_default()
}
