//! The client's error type.

use std::fmt;

/// A boxed error from below the client (transport, resolver).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of every fallible client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to an inference server.
///
/// Server-side failures keep their gRPC [`tonic::Code`], so callers (and
/// tests) can branch on `NOT_FOUND` versus `INVALID_ARGUMENT` instead of
/// matching message strings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server (or the transport, on its behalf) answered with a gRPC
    /// status other than `OK`.
    #[error("{code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message, as sent.
        message: String,
    },

    /// The endpoint was not a valid URI, its name did not resolve, or no
    /// connection could be made.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint the client was asked to connect to.
        endpoint: String,
        /// The transport's (or the resolver's) error.
        #[source]
        source: BoxError,
    },

    /// The client was configured with something it cannot use: a header
    /// that is not valid gRPC metadata, an empty endpoint list, an
    /// `https://` endpoint without the `tls` feature, and so on.
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// One request of a `ModelStreamInfer` stream failed; the stream goes
    /// on. The protocol carries only a message here, no gRPC code.
    #[error("request '{id}' failed: {message}")]
    Stream {
        /// The failed request's id (empty if it had none).
        id: String,
        /// The server's error message.
        message: String,
    },

    /// The server's response broke the protocol: a tensor's data does not
    /// match its datatype and shape, a BYTES stream is truncated, and so on.
    #[error("malformed response: {0}")]
    Decode(String),

    /// The caller's data does not fit what it declared or asked for: an
    /// input's element count differs from its shape, or an output is read as
    /// a datatype it does not have.
    #[error("{0}")]
    Mismatch(String),
}

impl Error {
    /// The gRPC status code, if this error came from a gRPC status.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status { code, .. } => Some(*code),
            Error::Connect { .. }
            | Error::Config(_)
            | Error::Stream { .. }
            | Error::Decode(_)
            | Error::Mismatch(_) => None,
        }
    }

    /// Whether the error is a gRPC status with `code`.
    pub fn is(&self, code: tonic::Code) -> bool {
        self.code() == Some(code)
    }

    /// The server's message: a gRPC status's, or a failed stream request's.
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Status { message, .. } | Error::Stream { message, .. } => Some(message),
            Error::Connect { .. } | Error::Config(_) | Error::Decode(_) | Error::Mismatch(_) => {
                None
            }
        }
    }

    pub(crate) fn connect(endpoint: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Connect {
            endpoint: endpoint.into(),
            source: source.into(),
        }
    }

    pub(crate) fn config(message: impl fmt::Display) -> Self {
        Error::Config(message.to_string())
    }

    pub(crate) fn decode(message: impl fmt::Display) -> Self {
        Error::Decode(message.to_string())
    }

    pub(crate) fn mismatch(message: impl fmt::Display) -> Self {
        Error::Mismatch(message.to_string())
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_code_and_message() {
        let err = Error::from(tonic::Status::not_found("model 'x' not found"));
        assert_eq!(err.code(), Some(tonic::Code::NotFound));
        assert_eq!(err.message(), Some("model 'x' not found"));
        assert_eq!(err.to_string(), "NotFound: model 'x' not found");
    }

    #[test]
    fn local_errors_have_no_code() {
        assert_eq!(Error::decode("bad").code(), None);
        assert_eq!(Error::mismatch("bad").code(), None);
        assert_eq!(Error::mismatch("bad").message(), None);
        assert_eq!(Error::config("bad").code(), None);
        assert!(!Error::config("bad").is(tonic::Code::Unknown));
        assert!(Error::from(tonic::Status::unavailable("x")).is(tonic::Code::Unavailable));
    }
}
