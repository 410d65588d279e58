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

mod api_keys;
mod auth;
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
mod tls;
mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tower::Layer;

pub use api_keys::{ApiGroup, KeyFileError, UnknownGroup};
pub use backend::BackendError;
pub use config::{
    BatchSize, Config, ConfigError, ControlMode, InstanceCount, LogFormat, SETTINGS, Setting,
    SettingFlags, keys, reference as settings_reference,
};
pub use health::REASON_KEY as HEALTH_REASON_KEY;
pub use logging::{LogInitError, init as init_logging};
pub use tls::TlsError;
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
    /// The TLS certificate, key or client CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The API key file (`api_keys`) cannot be used.
    #[error(transparent)]
    ApiKeys(#[from] KeyFileError),
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
    /// Plaintext `grpc.health.v1` only (`health_address`); `None` serves
    /// none.
    pub health: Option<TcpListener>,
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
        let health = match config.health_address {
            Some(address) => Some(bind("health_address", address).await?),
            None => None,
        };
        Ok(Listeners {
            grpc,
            http,
            metrics,
            health,
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
    // TLS: the server does not start without the TLS it was asked for.
    let tls = config.tls_files().map(tls::Tls::load).transpose()?;
    let tls_reload = tls
        .as_ref()
        .map(|tls| tokio::spawn(Arc::clone(tls).watch(config.tls_reload_interval)));
    let health = Health::new();
    // Every port holds the same connection limits.
    let limits = serve::Limits::from_config(&config);
    let metrics_tls = tls.clone().filter(|_| config.metrics_tls);
    let metrics = listeners.metrics.map(|listener| {
        let metrics = metrics::Metrics::new();
        if let Ok(address) = listener.local_addr() {
            let scheme = if metrics_tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!(%address, scheme, "serving Prometheus metrics at /metrics");
        }
        (Arc::clone(&metrics), {
            let (service, upkeep) = Arc::clone(&metrics).endpoint();
            // The same limits as every other port, and scraped until
            // the process ends, through the drain: the task is aborted
            // last.
            let how = serve::Listener {
                protocols: serve::Protocols::Http1AndHttp2,
                tls: metrics_tls,
                limits: limits.clone(),
            };
            tokio::spawn(async move {
                tokio::select! {
                    () = serve::serve(listener, how, service, std::future::pending()) => {}
                    () = upkeep => {}
                }
            })
        })
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

    // API keys per API group: one check in front of both transports, and
    // the key file reloaded while the server runs.
    let auth = auth::Auth::new(
        config.api_keys.as_deref(),
        &config.protected_groups,
        metrics.as_ref().map(|(m, _)| Arc::clone(m)),
    )?;
    let auth_reload = auth.watch();
    if auth.enabled() {
        let groups: Vec<&str> = config.protected_groups.iter().map(|g| g.as_str()).collect();
        tracing::info!(groups = %groups.join(","), "API keys required");
    } else {
        tracing::info!("no API keys required (api_keys unset or protected_groups empty)");
    }
    let grpc = auth::layer::AuthLayer::<auth::layer::Grpc>::new(auth.clone()).layer(grpc);
    let rest_auth = auth::layer::AuthLayer::<auth::layer::Rest>::new(auth);

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
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    if let Ok(address) = listeners.grpc.local_addr() {
        tracing::info!(%address, scheme, mtls = config.tls_client_ca.is_some(), "serving gRPC");
    }
    let grpc_server = serve::serve(
        listeners.grpc,
        serve::Listener {
            protocols: serve::Protocols::Http2,
            tls: tls.clone(),
            limits: limits.clone(),
        },
        grpc,
        stop_signal(),
    );
    let http_server = listeners.http.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, scheme, "serving REST (KServe v2 over HTTP)");
        }
        serve::serve(
            listener,
            serve::Listener {
                protocols: serve::Protocols::Http1AndHttp2,
                tls: tls.clone(),
                limits: limits.clone(),
            },
            rest_auth.layer(http::service(
                core,
                Arc::clone(&health),
                config.max_message_size,
            )),
            stop_signal(),
        )
    });
    // Kubernetes gRPC probes cannot present a client certificate or trust
    // a private CA: health alone, in plaintext, on its own port.
    let health_server = listeners.health.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving grpc.health.v1 only, plaintext");
        }
        serve::serve(
            listener,
            serve::Listener {
                protocols: serve::Protocols::Http2,
                tls: None,
                limits: limits.clone(),
            },
            grpc::health_only(&health),
            stop_signal(),
        )
    });
    let server = async move {
        let signal = tokio::spawn(signal);
        let http_server = async move {
            if let Some(server) = http_server {
                server.await;
            }
        };
        let health_server = async move {
            if let Some(server) = health_server {
                server.await;
            }
        };
        tokio::join!(grpc_server, http_server, health_server);
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
    if let Some(reload) = tls_reload {
        reload.abort();
    }
    if let Some(reload) = auth_reload {
        reload.abort();
    }
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
    pub use crate::api_keys::{Keys, grpc_group, rest_group};
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
