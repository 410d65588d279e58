//! The KServe v2 REST transport (Open Inference Protocol over HTTP, with
//! Triton's extensions): a thin adapter, like `grpc`, onto the same
//! inference core. Requests become a `ModelInferRequest` and an
//! [`Arrival`]; answers and errors come back the way the protocol writes
//! them, with the HTTP status derived from the gRPC code in one place
//! ([`http_status`]).

mod admin;
mod infer;
mod json;
mod repository;

pub(crate) use infer::parse_body;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use tokio::time::Instant;
use tonic::Code;
use tower::Layer;
use tower::util::{MapRequest, MapRequestLayer};

use crate::error::Error;
use crate::health::Health;
use crate::inference::{Arrival, Inference};
use crate::metrics::Protocol;
use crate::trace::{TRACEPARENT, TraceParent};

/// What every handler reaches.
#[derive(Debug, Clone)]
struct Rest {
    core: Inference,
    health: Arc<Health>,
}

/// The REST service, ready to serve connections.
pub(crate) type HttpService = MapRequest<
    Router,
    fn(http::Request<hyper::body::Incoming>) -> http::Request<hyper::body::Incoming>,
>;

/// Every REST endpoint. Bodies larger than `max_message_size` are refused
/// (413) before they are read in full.
pub(crate) fn service(
    core: Inference,
    health: Arc<Health>,
    max_message_size: usize,
) -> HttpService {
    let state = Rest { core, health };
    let router = Router::new()
        .route("/v2/health/live", get(admin::live))
        .route("/v2/health/ready", get(admin::ready))
        .route("/v2", get(admin::server_metadata))
        .route("/v2/models/stats", get(admin::all_stats))
        .route("/v2/models/{model}", get(admin::model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(admin::model_metadata_version),
        )
        .route("/v2/models/{model}/ready", get(admin::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(admin::model_ready_version),
        )
        .route("/v2/models/{model}/config", get(admin::model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(admin::model_config_version),
        )
        .route("/v2/models/{model}/stats", get(admin::model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(admin::model_stats_version),
        )
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer::infer_version),
        )
        .route("/v2/systemsharedmemory/status", get(admin::shm_status_all))
        .route(
            "/v2/systemsharedmemory/region/{name}/status",
            get(admin::shm_status),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/register",
            post(admin::shm_register),
        )
        .route(
            "/v2/systemsharedmemory/unregister",
            post(admin::shm_unregister_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/unregister",
            post(admin::shm_unregister),
        )
        .route("/v2/cudasharedmemory/status", get(admin::cuda_status_all))
        .route(
            "/v2/cudasharedmemory/region/{name}/status",
            get(admin::cuda_status),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/register",
            post(admin::cuda_register),
        )
        .route(
            "/v2/cudasharedmemory/unregister",
            post(admin::cuda_unregister),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/unregister",
            post(admin::cuda_unregister),
        )
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository::unload),
        )
        .route(
            "/v2/logging",
            get(admin::log_settings).post(admin::update_log_settings),
        )
        .route(
            "/v2/trace/setting",
            get(admin::trace_settings).post(admin::update_trace_settings),
        )
        .route(
            "/v2/models/{model}/trace/setting",
            get(admin::model_trace_settings).post(admin::update_model_trace_settings),
        )
        .fallback(admin::no_route)
        .layer(DefaultBodyLimit::max(max_message_size))
        .with_state(state);
    MapRequestLayer::new(stamp as fn(_) -> _).layer(router)
}

/// Stamps a request's [`Arrival`] as soon as its headers are read.
fn stamp<B>(mut request: http::Request<B>) -> http::Request<B> {
    let trace = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    request.extensions_mut().insert(Arrival {
        received: Instant::now(),
        deadline: None,
        protocol: Protocol::Http,
        trace,
    });
    request
}

/// The HTTP status for a gRPC code: the one mapping every REST error goes
/// through (the usual gRPC-to-HTTP table, as gRPC gateways use). No
/// catch-all arm: every code is decided here.
#[deny(clippy::wildcard_enum_match_arm)]
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // nginx's "client closed request": the caller gave up.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// A REST error: `{"error": "<message>"}` with the status of its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestError {
    code: Code,
    message: String,
}

impl RestError {
    /// An error with `code`.
    fn new(code: Code, message: impl Into<String>) -> RestError {
        RestError {
            code,
            message: message.into(),
        }
    }

    /// A request that does not follow the protocol (the body's JSON).
    fn bad_request(message: impl Into<String>) -> RestError {
        RestError::new(Code::InvalidArgument, message)
    }

    /// A core error, its message prefixed with the request id as over gRPC.
    fn from_core(error: Error, request_id: &str) -> RestError {
        let code = error.code();
        if request_id.is_empty() {
            RestError::new(code, error.to_string())
        } else {
            RestError::new(code, format!("[request id: {request_id}] {error}"))
        }
    }
}

impl From<Error> for RestError {
    fn from(error: Error) -> RestError {
        RestError::from_core(error, "")
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (http_status(self.code), axum::Json(body)).into_response()
    }
}

/// A request body, read whole (up to the body limit). A body that cannot
/// be read (too large: 413; the connection broke) is answered in the
/// protocol's JSON shape, with the status of that transport failure:
/// these are not the core's errors and have no gRPC code.
pub(crate) struct Body(pub(crate) bytes::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Body, Response> {
        match bytes::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) => {
                let body = serde_json::json!({ "error": rejection.body_text() });
                Err((rejection.status(), axum::Json(body)).into_response())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// REST readiness is the same `Health` as gRPC's: off before models
    /// load, on once they have, off for good once draining begins.
    #[test]
    fn readiness_follows_health_and_turns_off_when_draining() {
        let health = Health::new();
        let status = |health: &Health| admin::readiness(health).status();
        assert_eq!(status(&health), StatusCode::BAD_REQUEST);
        health.set_ready(Ok(()));
        assert_eq!(status(&health), StatusCode::OK);
        health.shutting_down();
        assert_eq!(status(&health), StatusCode::BAD_REQUEST);
        health.set_ready(Ok(()));
        assert_eq!(status(&health), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn every_code_has_an_http_status() {
        let expected = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, status) in expected {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }
}
