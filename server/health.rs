//! `grpc.health.v1.Health`, driven by the repository's readiness.
//!
//! `""` is SERVING while the process serves (liveness). The inference service
//! starts NOT_SERVING, turns SERVING once every model is loaded and warm, and
//! both go NOT_SERVING when shutdown begins, before draining.
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
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The service name readiness probes ask about.
pub(crate) const INFERENCE_SERVICE: &str = "inference.GRPCInferenceService";

/// What health statuses are derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct State {
    /// Every model loaded (the repository's readiness).
    ready: bool,
    /// Shutdown has begun.
    draining: bool,
}

impl State {
    /// The status of `service`, or `None` if it is not one this server has.
    fn status(self, service: &str) -> Option<ServingStatus> {
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

    /// Records the repository's readiness. Ignored once draining: nothing
    /// may turn the server ready again during shutdown.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.state.send_if_modified(|s| {
            let changed = !s.draining && s.ready != ready;
            if changed {
                s.ready = ready;
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
        let state = *self.health.state.borrow();
        match state.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service '{service}'"))),
        }
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
                let current = *state.borrow_and_update();
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
