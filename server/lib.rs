//! oxserve: a KServe v2 / Open Inference Protocol server (gRPC and REST)
//! for ONNX models.
//!
//! The path of one request follows the modules: `grpc` or `http` (the
//! transports: a request's arrival, deadline and trace context, thin
//! handlers) → `inference` (the one request path: model lookup, deadline,
//! shared memory, accounting, spans) → `tensor` (decode and validate) →
//! `repository` (the model version) → `scheduler` (queue and batching, to
//! the version's worker threads) → `backend` (ONNX Runtime) → back through
//! `tensor` to the response. `serve` owns the connections; `health`,
//! `metrics`, `stats` and `trace` observe; `shm` holds the shared memory
//! regions; `config`, `model_config` and `logging` hold the settings.
//!
//! [`run`] is the one entry point, used by `main` and by the tests alike.

mod backend;
mod cache;
mod config;
mod error;
mod fault_log;
mod grpc;
mod health;
mod http;
mod inference;
mod logging;
mod metrics;
mod model_config;
mod repository;
mod scheduler;
mod serve;
mod shm;
mod stats;
mod tensor;
mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use backend::BackendError;
pub use config::{
    BatchSize, Config, ConfigError, ControlMode, LogFormat, SETTINGS, Setting, SettingFlags, keys,
    reference as settings_reference,
};
pub use health::REASON_KEY as HEALTH_REASON_KEY;
pub use logging::{LogInitError, init as init_logging};
pub use trace::ExportError;

use health::Health;
use inference::Inference;
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
    /// The trace exporter could not be set up.
    #[error(transparent)]
    Traces(#[from] ExportError),
    /// An address could not be bound.
    #[error("cannot listen on {key} {address}: {source}")]
    Bind {
        /// The setting that names the address.
        key: &'static str,
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The sockets a server listens on, bound before [`run`] so that callers
/// (tests, benches) can bind `127.0.0.1:0` and learn the ports.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC (`grpc_address`).
    pub grpc: TcpListener,
    /// REST (`http_address`); `None` serves none.
    pub http: Option<TcpListener>,
    /// Prometheus metrics (`metrics_address`); `None` serves none.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address `config` names.
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        let bind = |key: &'static str, address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| ServeError::Bind {
                    key,
                    address,
                    source,
                })
        };
        let grpc = bind("grpc_address", config.grpc_address).await?;
        let http = match config.http {
            true => Some(bind("http_address", config.http_address).await?),
            false => None,
        };
        let metrics = match config.metrics {
            true => Some(bind("metrics_address", config.metrics_address).await?),
            false => None,
        };
        Ok(Listeners {
            grpc,
            http,
            metrics,
        })
    }
}

/// Serves `config`'s model repository on `listeners` until `shutdown`
/// completes, then drains in-flight requests for at most
/// `config.drain_timeout` and returns.
///
/// The listeners are served at once (liveness answers while models load);
/// the inference service's health turns SERVING when loading is done.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Fail before serving anything if ONNX Runtime is missing.
    let env = backend::environment(config.onnxruntime_library.as_deref())?;
    let health = Health::new();
    let metrics = listeners.metrics.map(|listener| {
        let metrics = metrics::Metrics::new();
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving Prometheus metrics at /metrics");
        }
        (Arc::clone(&metrics), tokio::spawn(metrics.serve(listener)))
    });
    let options = LoadOptions {
        defaults: config.model_defaults(),
        metrics: metrics.as_ref().map(|(m, _)| Arc::clone(m)),
        strict_readiness: config.strict_readiness,
        mode: config.model_control_mode,
    };
    let repository = Arc::new(
        Repository::new(&config.model_repository, env, options, Arc::clone(&health)).map_err(
            |source| ServeError::Repository {
                path: config.model_repository.clone(),
                source,
            },
        )?,
    );
    // Loading runs beside the listeners, which answer liveness meanwhile;
    // readiness follows the repository from here on.
    let lifecycle = {
        let repository = Arc::clone(&repository);
        let load_model = config.load_model.clone();
        let poll = (config.model_control_mode == ControlMode::Poll)
            .then_some(config.repository_poll_interval);
        tokio::spawn(async move {
            repository.start(&load_model).await;
            if let Some(interval) = poll {
                repository.poll(interval).await;
            }
        })
    };

    let response_cache = (config.response_cache_size > 0)
        .then(|| Arc::new(cache::ResponseCache::new(config.response_cache_size)));
    if let (Some((metrics, _)), Some(cache)) = (&metrics, &response_cache) {
        metrics.watch_cache(Arc::clone(cache));
    }
    let traces = trace::Traces::new(config.otlp_endpoint.as_deref(), config.trace_sampling_ratio)?;
    if let Some(endpoint) = traces.endpoint() {
        tracing::info!(endpoint, "exporting traces over OTLP");
    }
    let core = Inference::new(
        Arc::clone(&repository),
        &config.served_by(),
        response_cache,
        shm::SharedMemory::new(),
        Arc::clone(&traces),
        config.max_message_size,
    );
    let grpc = grpc::service(core.clone(), Arc::clone(&health), config.max_message_size)?;

    let (drain_started, drain_begun) = tokio::sync::oneshot::channel::<()>();
    // Every listener stops accepting at the same moment.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = {
        let health = Arc::clone(&health);
        async move {
            shutdown.await;
            tracing::info!("shutting down: readiness off, draining in-flight requests");
            health.shutting_down();
            let _ = stop.send(true);
            let _ = drain_started.send(());
        }
    };
    let stop_signal = move || {
        let mut stopped = stopped.clone();
        async move {
            // Ends on the signal, or when the signal's task is gone.
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    if let Ok(address) = listeners.grpc.local_addr() {
        tracing::info!(%address, "serving gRPC");
    }
    let grpc_server = serve::serve(listeners.grpc, serve::Protocols::Http2, grpc, stop_signal());
    let http_server = listeners.http.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving REST (KServe v2 over HTTP)");
        }
        serve::serve(
            listener,
            serve::Protocols::Http1AndHttp2,
            http::service(core, Arc::clone(&health), config.max_message_size),
            stop_signal(),
        )
    });
    let server = async move {
        let signal = tokio::spawn(signal);
        match http_server {
            Some(http_server) => {
                tokio::join!(grpc_server, http_server);
            }
            None => grpc_server.await,
        }
        signal.abort();
    };
    let drain_deadline = async move {
        if drain_begun.await.is_err() {
            // The server ended without a shutdown signal.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(config.drain_timeout).await;
    };

    tokio::select! {
        () = server => {}
        () = drain_deadline => {
            tracing::warn!(
                timeout = ?config.drain_timeout,
                "drain timeout reached with requests still in flight; exiting"
            );
        }
    }
    // A model still loading at shutdown finishes in the background; loaded
    // versions stop their worker threads once unloaded.
    lifecycle.abort();
    if let Some((_, exporter)) = metrics {
        exporter.abort();
    }
    repository.unload_all();
    // Send the last spans before returning.
    let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Entry points for the fuzz targets in `fuzz/`: everything that parses
/// outside input, from bytes. Not a stable API.
#[doc(hidden)]
pub mod fuzzing;

/// Pieces of the request path for the benchmarks in `benches/` (and
/// fuzzing): not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::backend::{
        GpuOptions, Instance, Memory, ModelSource, SessionOptions, Threads, environment,
    };
    pub use crate::inference::timing_parameters;
    pub use crate::scheduler::{
        AutoBatch, AutoBatchSettings, BatchPolicy, ComputeTimes, Decision, ExecError, Executed,
        Executor, Observer, Queue, Queued, Scheduler, SchedulerError, SchedulerSettings, Served,
        SlotId, Ticket, Unobserved, Waiting,
    };
    pub use crate::tensor::{
        DataType, DecodedRequest, ModelSpec, Tensor, TensorSpec, decode_request, encode_outputs,
    };
}
