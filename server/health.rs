//! `grpc.health.v1.Health`, driven by the repository's readiness.
//!
//! `""` is SERVING while the process serves (liveness). The inference service
//! starts NOT_SERVING, turns SERVING once every model is loaded and warm, and
//! both go NOT_SERVING when shutdown begins, before draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The service name readiness probes ask about.
pub const INFERENCE_SERVICE: &str = "inference.GRPCInferenceService";

/// Health statuses plus the draining flag that `ServerReady` also reads.
#[derive(Debug)]
pub struct Health {
    reporter: HealthReporter,
    draining: AtomicBool,
    follower: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Health {
    /// A reporter with the inference service NOT_SERVING.
    pub async fn new(reporter: HealthReporter) -> Arc<Health> {
        // tonic-health marks "" SERVING from the start, which is right for
        // liveness; readiness is set explicitly and starts false.
        reporter
            .set_service_status(INFERENCE_SERVICE, ServingStatus::NotServing)
            .await;
        Arc::new(Health {
            reporter,
            draining: AtomicBool::new(false),
            follower: std::sync::Mutex::new(None),
        })
    }

    /// Mirrors `ready` onto the inference service's status until shutdown.
    pub fn follow(self: &Arc<Self>, mut ready: watch::Receiver<bool>) {
        let health = Arc::clone(self);
        let task = tokio::spawn(async move {
            loop {
                let status = if *ready.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                health
                    .reporter
                    .set_service_status(INFERENCE_SERVICE, status)
                    .await;
                if ready.changed().await.is_err() {
                    return;
                }
            }
        });
        *self.follower.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks everything NOT_SERVING for good: load balancers and probes stop
    /// sending traffic while in-flight requests finish.
    pub async fn shutting_down(&self) {
        self.draining.store(true, Ordering::Release);
        let follower = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = follower {
            // Stop the follower first so it cannot flip a status back.
            task.abort();
            let _ = task.await;
        }
        for service in ["", INFERENCE_SERVICE] {
            self.reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    }
}
