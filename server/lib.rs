//! oxserve: a KServe v2 / Open Inference Protocol gRPC server for ONNX
//! models.
//!
//! The path of one request follows the modules: [`grpc`] (tonic handlers) →
//! [`tensor`] (decode and validate) → [`repository`] (find the model version)
//! → [`scheduler`] (queue to the version's worker thread) → [`backend`] (ONNX
//! Runtime) → back through [`tensor`] to the response.
//!
//! [`run`] is the one entry point, used by `main` and by the tests alike.

pub mod backend;
pub mod config;
pub mod error;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod model_config;
pub mod proto;
pub mod repository;
pub mod scheduler;
pub mod stats;
pub mod tensor;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::Config;

use backend::BackendError;
use health::Health;
use repository::{LoadOptions, Repository};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// ONNX Runtime is missing or unusable.
    #[error(transparent)]
    Runtime(#[from] BackendError),
    /// The model repository could not be read.
    #[error("cannot read model repository '{path}': {source}")]
    Repository {
        /// The repository root.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics address could not be bound.
    #[error("cannot listen on metrics_address {address}: {source}")]
    MetricsAddress {
        /// The address.
        address: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `config`'s model repository on `listener` until `shutdown`
/// completes, then drains in-flight requests for at most
/// `config.drain_timeout` and returns. Prometheus metrics are served on
/// `config.metrics_address` when `config.metrics` is on.
///
/// The listener is served at once (liveness answers while models load); the
/// inference service's health turns SERVING when loading is done.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = if config.metrics {
        let address = config.metrics_address;
        Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| ServeError::MetricsAddress { address, source })?,
        )
    } else {
        None
    };
    run_with_metrics(config, listener, metrics, shutdown).await
}

/// [`run`], with the metrics listener bound by the caller (tests bind
/// `127.0.0.1:0`); `None` serves no metrics.
pub async fn run_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Fail before serving anything if ONNX Runtime is missing.
    let env = backend::environment(config.onnxruntime_library.as_deref())?;
    let defaults = config.model_defaults();
    let repository = Arc::new(
        Repository::discover(&config.model_repository, &defaults).map_err(|source| {
            ServeError::Repository {
                path: config.model_repository.clone(),
                source,
            }
        })?,
    );

    let health = Health::new();

    let metrics = metrics_listener.map(|listener| {
        let metrics = metrics::Metrics::new();
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving Prometheus metrics at /metrics");
        }
        (Arc::clone(&metrics), tokio::spawn(metrics.serve(listener)))
    });
    let options = LoadOptions {
        defaults,
        metrics: metrics.as_ref().map(|(m, _)| Arc::clone(m)),
        strict_readiness: config.strict_readiness,
    };
    let loader = {
        let repository = Arc::clone(&repository);
        let health = Arc::clone(&health);
        tokio::task::spawn_blocking(move || health.set_ready(repository.load_all(&env, &options)))
    };

    let routes = grpc::routes(
        Arc::clone(&repository),
        Arc::clone(&health),
        config.max_message_size,
    )?;

    // Small requests must not wait for Nagle's algorithm.
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        stream.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });

    let (drain_started, drain_begun) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let health = Arc::clone(&health);
        async move {
            shutdown.await;
            tracing::info!("shutting down: readiness off, draining in-flight requests");
            health.shutting_down();
            let _ = drain_started.send(());
        }
    };
    let server = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    let drain_deadline = async move {
        if drain_begun.await.is_err() {
            // The server ended without a shutdown signal.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(config.drain_timeout).await;
    };

    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = drain_deadline => {
            tracing::warn!(
                timeout = ?config.drain_timeout,
                "drain timeout reached with requests still in flight; exiting"
            );
            Ok(())
        }
    };
    // A model still loading at shutdown finishes in the background; loaded
    // versions stop their worker threads once unloaded.
    loader.abort();
    if let Some((_, exporter)) = metrics {
        exporter.abort();
    }
    repository.unload_all();
    tracing::info!("stopped");
    result
}
