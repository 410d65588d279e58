//! The `oxserve` command: `serve` runs the server, `health` asks a running
//! one for its gRPC health status (for Docker HEALTHCHECK and exec probes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use oxserve::Config;
use serde::Serialize;

/// A KServe v2 / Open Inference Protocol gRPC server for ONNX models.
#[derive(Debug, Parser)]
#[command(name = "oxserve", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the models of a model repository over gRPC.
    ///
    /// Settings come from built-in defaults, then the --config file, then
    /// OXSERVE_* environment variables (OXSERVE_MODEL_REPOSITORY, ...), then
    /// these flags; each flag names its config key and variable.
    Serve(Box<ServeArgs>),
    /// Check a server's gRPC health; exit 0 only if it is SERVING.
    Health(HealthArgs),
}

/// Flags of `serve`; each overrides the config key of the same name.
#[derive(Debug, Args, Serialize)]
struct ServeArgs {
    /// TOML file with any of the keys below (snake_case).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Model repository: <DIR>/<model>/<version>/model.onnx
    /// [key: model_repository, env: OXSERVE_MODEL_REPOSITORY, default: /models]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_repository: Option<PathBuf>,
    /// gRPC listen address [key: grpc_address, env: OXSERVE_GRPC_ADDRESS, default: 0.0.0.0:8001]
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_address: Option<String>,
    /// Largest gRPC message, in bytes or with a unit such as 256MiB
    /// [key: max_message_size, env: OXSERVE_MAX_MESSAGE_SIZE, default: 256MiB]
    #[arg(long, value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_size: Option<String>,
    /// How long in-flight requests may finish after SIGTERM, e.g. 30s
    /// [key: drain_timeout, env: OXSERVE_DRAIN_TIMEOUT, default: 30s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_timeout: Option<String>,
    /// Path of libonnxruntime.so
    /// [key: onnxruntime_library, env: OXSERVE_ONNXRUNTIME_LIBRARY, default: ORT_DYLIB_PATH, beside the binary, or .oxserve/onnxruntime/]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    onnxruntime_library: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per model instance; 0 = all cores
    /// [key: intra_op_threads, env: OXSERVE_INTRA_OP_THREADS, default: 1]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    intra_op_threads: Option<usize>,
    /// Model instances (sessions, each on its own thread) for models whose
    /// config.pbtxt has no instance_group
    /// [key: instances, env: OXSERVE_INSTANCES, default: 1]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<usize>,
    /// Largest batch formed for models that can batch and set none; 0 = no batching
    /// [key: max_batch_size, env: OXSERVE_MAX_BATCH_SIZE, default: 64]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_batch_size: Option<usize>,
    /// Batch sizes run as soon as formed, comma-separated, e.g. 8,16
    /// [key: preferred_batch_sizes, env: OXSERVE_PREFERRED_BATCH_SIZES (e.g. [8,16]), default: none]
    #[arg(long, value_name = "N,N", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_batch_sizes: Option<Vec<usize>>,
    /// Longest a request waits for others to join its batch, e.g. 500us
    /// [key: max_queue_delay, env: OXSERVE_MAX_QUEUE_DELAY, default: 0s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_queue_delay: Option<String>,
    /// Requests that may wait per model version before UNAVAILABLE
    /// [key: max_queue_size, env: OXSERVE_MAX_QUEUE_SIZE, default: 1024]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_queue_size: Option<usize>,
    /// Report ready only when every model loaded
    /// [key: strict_readiness, env: OXSERVE_STRICT_READINESS, default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_readiness: Option<bool>,
    /// Log filter: error, warn, info, debug, trace or a tracing directive
    /// [key: log_level, env: OXSERVE_LOG_LEVEL, default: info]
    #[arg(long, value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json
    /// [key: log_format, env: OXSERVE_LOG_FORMAT, default: text]
    #[arg(long, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
    /// Serve Prometheus metrics
    /// [key: metrics, env: OXSERVE_METRICS, default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<bool>,
    /// Prometheus endpoint address (GET /metrics)
    /// [key: metrics_address, env: OXSERVE_METRICS_ADDRESS, default: 0.0.0.0:8002]
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_address: Option<String>,
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// Server address, HOST:PORT (plaintext gRPC).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8001")]
    addr: String,
    /// Service to check: "" (the server) or inference.GRPCInferenceService.
    #[arg(long, value_name = "NAME", default_value = "")]
    service: String,
    /// Give up after this long, e.g. 1s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Health(args) => health(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let figment = Config::figment(args.config.as_deref(), &args);
    let config = match Config::from_figment(&figment) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("oxserve: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt().with_env_filter(config.log_filter());
    match config.log_format {
        oxserve::config::LogFormat::Json => logs.json().with_current_span(true).init(),
        // Colour only for people: log collectors get plain text.
        oxserve::config::LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("oxserve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let address = config.grpc_address;
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("oxserve: cannot listen on grpc_address {address}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match oxserve::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxserve: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Completes on SIGTERM (Kubernetes, Docker) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            // Without signal handlers the process can still be killed; it
            // just cannot drain. Say so instead of pretending.
            tracing::error!("cannot install signal handlers: {e}; graceful shutdown is disabled");
            std::future::pending::<()>().await;
        }
    }
}

fn health(args: HealthArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("oxserve health: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async { tokio::time::timeout(args.timeout, check(&args)).await });
    let shown = if args.service.is_empty() {
        "\"\""
    } else {
        args.service.as_str()
    };
    match result {
        Ok(Ok(status)) => {
            println!("{shown}: {}", status.as_str_name());
            if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("oxserve health: {}: {e}", args.addr);
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "oxserve health: {}: no answer within {:?}",
                args.addr, args.timeout
            );
            ExitCode::FAILURE
        }
    }
}

async fn check(
    args: &HealthArgs,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))
        .map_err(|e| format!("invalid address: {e}"))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    Ok(response.into_inner().status())
}
