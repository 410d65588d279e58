//! `grpc.health.v1.Health`, driven by the repository's readiness.
//!
//! `""` is SERVING while the process serves (liveness). The inference service
//! starts NOT_SERVING, turns SERVING once every model is loaded and warm, and
//! both go NOT_SERVING when shutdown begins, before draining.
//!
//! A NOT_SERVING answer to `Check` carries the reason in the response
//! metadata [`REASON_KEY`] (binary, UTF-8), so that `oxserve health`, and
//! with it Docker's health log, can say why: models still loading, which
//! model failed and how, no models at all, shutting down. Clients that do
//! not know the key ignore it; the status stays the protocol's.
//!
//! Written here rather than taken from tonic-health's server because two
//! things matter for a server that drains: `Watch` streams must end once
//! shutdown has been announced (an open stream would otherwise hold the
//! graceful drain until its timeout), and `Watch` on an unknown service
//! must answer SERVICE_UNKNOWN and stay open, as the health protocol says.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The service name readiness probes ask about.
pub(crate) const INFERENCE_SERVICE: &str = "inference.GRPCInferenceService";

/// The response metadata key of a NOT_SERVING answer's reason (`-bin`:
/// reasons quote paths and ONNX Runtime's messages, which need not be ASCII).
pub const REASON_KEY: &str = "oxserve-reason-bin";

/// Reasons longer than this are cut: they travel in an HTTP/2 header, and
/// Docker keeps 4 KiB of a health check's output.
const REASON_LIMIT: usize = 2048;

/// What health statuses are derived from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct State {
    /// Every model loaded (the repository's readiness).
    ready: bool,
    /// Why the repository is not ready, once loading has ended.
    not_ready: Option<Arc<str>>,
    /// Shutdown has begun.
    draining: bool,
}

impl State {
    /// Why `service` is not SERVING; `None` when it is (or is unknown).
    fn reason(&self, service: &str) -> Option<String> {
        if self.draining {
            return Some("shutting down".to_string());
        }
        match service {
            INFERENCE_SERVICE if !self.ready => Some(match &self.not_ready {
                Some(reason) => reason.to_string(),
                None => "models are loading".to_string(),
            }),
            _ => None,
        }
    }

    /// The status of `service`, or `None` if it is not one this server has.
    fn status(&self, service: &str) -> Option<ServingStatus> {
        let serving = match service {
            "" => !self.draining,
            INFERENCE_SERVICE => self.ready && !self.draining,
            _ => return None,
        };
        Some(if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

/// Health statuses, shared by the health service, `ServerReady` and the
/// shutdown path.
#[derive(Debug)]
pub(crate) struct Health {
    state: watch::Sender<State>,
}

impl Health {
    /// Live, not ready, not draining.
    pub(crate) fn new() -> Arc<Health> {
        Arc::new(Health {
            state: watch::Sender::new(State::default()),
        })
    }

    /// Records the repository's readiness once loading has ended: ready, or
    /// not with the reason why. Ignored once draining: nothing may turn the
    /// server ready again during shutdown.
    pub(crate) fn set_ready(&self, readiness: Result<(), String>) {
        let (ready, not_ready) = match readiness {
            Ok(()) => (true, None),
            Err(reason) => (false, Some(Arc::from(reason))),
        };
        self.state.send_if_modified(|s| {
            let changed = !s.draining && (s.ready != ready || s.not_ready != not_ready);
            if changed {
                s.ready = ready;
                s.not_ready = not_ready;
            }
            changed
        });
    }

    /// Whether the inference service is ready (loaded and not draining).
    pub(crate) fn is_ready(&self) -> bool {
        self.state.borrow().status(INFERENCE_SERVICE) == Some(ServingStatus::Serving)
    }

    /// Marks everything NOT_SERVING for good, so that probes and load
    /// balancers stop sending traffic while in-flight requests finish;
    /// `Watch` streams see the change and then end.
    pub(crate) fn shutting_down(&self) {
        self.state.send_modify(|s| s.draining = true);
    }

    /// The gRPC service answering from these statuses.
    pub(crate) fn service(self: &Arc<Self>) -> HealthServer<HealthService> {
        HealthServer::new(HealthService {
            health: Arc::clone(self),
        })
    }
}

/// The `grpc.health.v1.Health` implementation.
#[derive(Debug)]
pub(crate) struct HealthService {
    health: Arc<Health>,
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl HealthApi for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        let state = self.health.state.borrow().clone();
        let Some(status) = state.status(&service) else {
            return Err(Status::not_found(format!("unknown service '{service}'")));
        };
        let mut answer = Response::new(response(status));
        if let Some(reason) = state.reason(&service) {
            answer.metadata_mut().insert_bin(
                REASON_KEY,
                MetadataValue::from_bytes(truncate(&reason, REASON_LIMIT).as_bytes()),
            );
        }
        Ok(answer)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let mut state = self.health.state.subscribe();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let current = state.borrow_and_update().clone();
                let status = current
                    .status(&service)
                    .unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(status) {
                    if tx.send(Ok(response(status))).await.is_err() {
                        return; // the client went away
                    }
                    last = Some(status);
                }
                if current.draining {
                    return; // the final status is out; let the drain finish
                }
                tokio::select! {
                    changed = state.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Marks a cut reason.
const CUT: &str = "...";

/// `text` cut to at most `limit` bytes, on a character boundary, marked
/// with [`CUT`] when cut.
fn truncate(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return text.into();
    }
    let mut end = limit.saturating_sub(CUT.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_say_why_a_service_is_not_serving() {
        let mut state = State::default();
        assert_eq!(
            state.reason(INFERENCE_SERVICE).as_deref(),
            Some("models are loading")
        );
        assert_eq!(state.reason(""), None);
        state.not_ready = Some(Arc::from("model 'm': broken"));
        assert_eq!(
            state.reason(INFERENCE_SERVICE).as_deref(),
            Some("model 'm': broken")
        );
        state.ready = true;
        assert_eq!(state.reason(INFERENCE_SERVICE), None);
        state.draining = true;
        assert_eq!(state.reason("").as_deref(), Some("shutting down"));
        assert_eq!(
            state.reason(INFERENCE_SERVICE).as_deref(),
            Some("shutting down")
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        // Two-byte characters: a cut after 3 bytes would split one.
        let cut = truncate("\u{e9}\u{e9}\u{e9}\u{e9}", 6);
        assert_eq!(cut, "\u{e9}...");
        assert!(cut.len() <= 6);
    }
}
