//! Errors as gRPC statuses.

use tonic::Status;

use crate::error::Error;

/// The status for `error` ([`Error::code`]), its message prefixed with the
/// request id when the client sent one, as the reference server does.
pub(crate) fn to_status(error: Error, request_id: &str) -> Status {
    let code = error.code();
    if request_id.is_empty() {
        Status::new(code, error.to_string())
    } else {
        Status::new(code, format!("[request id: {request_id}] {error}"))
    }
}
