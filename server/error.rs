//! The server's request-time errors, and the one mapping from each to the
//! gRPC code clients expect (PROTOCOL.md's error table). Every transport
//! answers with that code, or (REST) with the HTTP status derived from it.

use std::path::PathBuf;

use tonic::Code;

use crate::backend::BackendError;
use crate::model_config::{CONFIG_FILE, MODEL_FILE, ModelConfigError};
use crate::scheduler::ExecError;
use crate::shm::ShmError;
use crate::tensor::InvalidInput;

/// Why a model or one of its versions cannot be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LoadError {
    /// The model directory has no version directories its policy selects.
    #[error("no version directories (<repository>/{model}/<number>/{MODEL_FILE}) found")]
    NoVersions {
        /// Model name.
        model: String,
    },
    /// Its configuration cannot be used.
    #[error("{model}/{CONFIG_FILE}: {source}")]
    Config {
        /// Model name.
        model: String,
        /// What is wrong.
        source: ModelConfigError,
    },
    /// The version directory lacks its model file.
    #[error("{} does not exist", .path.display())]
    MissingFile {
        /// The file looked for.
        path: PathBuf,
    },
    /// ONNX Runtime cannot load the model.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A warm-up sample the configuration asks for failed.
    #[error("{model}: warm-up sample '{sample}' failed: {reason}")]
    Warmup {
        /// Model name.
        model: String,
        /// The sample's name.
        sample: String,
        /// What ONNX Runtime said.
        reason: String,
    },
    /// The worker threads could not be started.
    #[error("cannot start the inference threads: {0}")]
    Threads(String),
}

impl LoadError {
    /// The gRPC code of a load request that failed this way: the model's
    /// files or configuration are at fault, unless the server itself is.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub(crate) fn code(&self) -> Code {
        match self {
            LoadError::NoVersions { .. } | LoadError::MissingFile { .. } => Code::NotFound,
            LoadError::Config { .. } | LoadError::Warmup { .. } => Code::InvalidArgument,
            LoadError::Backend(e) => match e {
                BackendError::Load { .. }
                | BackendError::Unsupported { .. }
                | BackendError::Rejected(_) => Code::InvalidArgument,
                BackendError::RuntimeNotFound { .. }
                | BackendError::Runtime(_)
                | BackendError::Run(_) => Code::Internal,
            },
            LoadError::Threads(_) => Code::Internal,
        }
    }
}

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
    /// A repository RPC the model control mode does not allow.
    #[error(
        "{rpc} is not allowed in model control mode '{mode}'; start the server with --model-control-mode explicit"
    )]
    ControlMode {
        /// The RPC.
        rpc: &'static str,
        /// The mode in force.
        mode: &'static str,
    },
    /// A load request that cannot be carried out as written.
    #[error("cannot load model '{model}': {reason}")]
    InvalidLoadRequest {
        /// Model name.
        model: String,
        /// What is wrong with the request.
        reason: String,
    },
    /// A load that was attempted and failed; whatever served before still
    /// serves.
    #[error("failed to load model '{model}': {source}")]
    LoadFailed {
        /// Model name.
        model: String,
        /// Why.
        source: LoadError,
    },
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
            Error::ControlMode { .. } => Code::FailedPrecondition,
            Error::InvalidLoadRequest { .. } => Code::InvalidArgument,
            Error::LoadFailed { source, .. } => source.code(),
            // ONNX Runtime refused a value of the request (an index out of
            // range): the caller's fault, not the server's.
            Error::Inference { source, .. } if source.caused_by_request() => Code::InvalidArgument,
            Error::Inference { .. } => Code::Internal,
            Error::SharedMemory(e) => e.code(),
        }
    }
}

/// The `reason` label ([`crate::metrics::CLIENT_ERROR_REASONS`]) of a
/// failure with `code` when the caller caused it; `None` when the server
/// or the load did (those are counted by code in the request metrics).
#[deny(clippy::wildcard_enum_match_arm)]
pub(crate) fn client_fault(code: Code) -> Option<&'static str> {
    match code {
        Code::InvalidArgument => Some("invalid_argument"),
        Code::NotFound => Some("not_found"),
        Code::FailedPrecondition => Some("failed_precondition"),
        Code::OutOfRange => Some("out_of_range"),
        Code::AlreadyExists => Some("already_exists"),
        Code::Unauthenticated => Some("unauthenticated"),
        Code::PermissionDenied => Some("permission_denied"),
        // Outcomes of load or of the server itself, not of what was sent.
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => None,
    }
}

fn version_suffix(version: &Option<String>) -> String {
    version
        .as_ref()
        .map(|v| format!(" version {v}"))
        .unwrap_or_default()
}
