//! The one mapping from the server's errors to gRPC statuses.

use tonic::{Code, Status};

use crate::error::Error;

/// The code clients expect for each error (PROTOCOL.md's error table). No
/// catch-all arm: a new variant must be given its code here to compile.
pub(crate) fn code(error: &Error) -> Code {
    match error {
        Error::ModelNotFound { .. } | Error::VersionNotFound { .. } => Code::NotFound,
        Error::ModelUnavailable { .. } => Code::Unavailable,
        Error::InvalidInput(_) | Error::InvalidParameter { .. } => Code::InvalidArgument,
        // Documented: a full queue is UNAVAILABLE, as Triton answers, so that
        // clients with retry policies try another replica.
        Error::QueueFull { .. } => Code::Unavailable,
        Error::Stopped { .. } => Code::Unavailable,
        Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        Error::Inference { .. } => Code::Internal,
    }
}

/// The status for `error`, its message prefixed with the request id when the
/// client sent one, as the reference server does.
pub(crate) fn to_status(error: Error, request_id: &str) -> Status {
    let code = code(&error);
    if request_id.is_empty() {
        Status::new(code, error.to_string())
    } else {
        Status::new(code, format!("[request id: {request_id}] {error}"))
    }
}
