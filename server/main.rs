//! The `oxserve` command: `serve` runs the server, `health` asks a running
//! one for its gRPC health status (for Docker HEALTHCHECK and exec probes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use oxserve::{Config, SettingFlags};

/// mimalloc frees across threads without a lock; glibc's malloc contended on
/// its arena locks per request (benches/README.md, CPU per request).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML file with any of the keys below (snake_case).
    #[arg(long, value_name = "FILE", env = "OXSERVE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingFlags,
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// Server address, HOST:PORT (plaintext gRPC unless --tls-ca). Default:
    /// the server's own health_address if set (and no --tls-ca), else its
    /// grpc_address (from --config, OXSERVE_* variables or the defaults),
    /// with an unspecified host (0.0.0.0, ::) asked on loopback.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// The server's TOML config file, to read grpc_address from.
    #[arg(long, value_name = "FILE", env = "OXSERVE_CONFIG")]
    config: Option<PathBuf>,
    /// Service to check: "" (the server) or inference.GRPCInferenceService.
    #[arg(long, value_name = "NAME", default_value = "")]
    service: String,
    /// Give up after this long, e.g. 1s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: HealthTls,
}

/// TLS for `oxserve health` against a server with `tls_cert` set.
#[derive(Debug, Args)]
struct HealthTls {
    /// Speak TLS, trusting the CA certificate(s) in this PEM file (the
    /// server's certificate must chain to one and name the host asked).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a server with tls_client_ca (mTLS);
    /// needs --tls-client-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_client_key",
        requires = "tls_ca"
    )]
    tls_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-client-cert.
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
    /// Name the server's certificate must carry, when it is not the host
    /// of the address (e.g. asking 127.0.0.1 for a certificate made out to
    /// oxserve.example.com).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
}

impl HealthTls {
    /// tonic's TLS settings, or `None` for plaintext.
    fn client_config(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.tls_server_name {
            config = config.domain_name(name.clone());
        }
        Ok(Some(config))
    }
}

fn main() -> ExitCode {
    // ONNX Runtime (1.2x and later, Linux too) creates a telemetry store and
    // persists a device id under $HOME/.cache/Microsoft when its environment
    // is created, before `with_telemetry(false)` can turn events off; on a
    // read-only root it warns that it cannot. Its own switch must be in the
    // environment before the library loads. A user's explicit value stands.
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // SAFETY: nothing else runs yet: no thread has been started (the
        // async runtime and ONNX Runtime come later), so no concurrent
        // getenv can observe the environment mid-update.
        unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Health(args) => health(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let figment = Config::figment(args.config.as_deref(), args.settings.dict());
    let config = match Config::from_figment(&figment) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("oxserve: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Level and format can be changed later through LogSettings.
    if let Err(e) = oxserve::init_logging(&config.log_level, config.log_format) {
        eprintln!("oxserve: {e}");
        return ExitCode::FAILURE;
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
        let listeners = match oxserve::Listeners::bind(&config).await {
            Ok(listeners) => listeners,
            Err(e) => {
                eprintln!("oxserve: {e}");
                return ExitCode::FAILURE;
            }
        };
        match oxserve::run(config, listeners, shutdown_signal()).await {
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

/// The address `oxserve health` asks: `--addr`, else the server's own
/// `grpc_address` as its configuration layers give it.
fn health_address(args: &HealthArgs) -> Result<String, String> {
    if let Some(addr) = &args.addr {
        return Ok(addr.clone());
    }
    let figment = Config::figment(args.config.as_deref(), figment::value::Dict::new());
    // With TLS on, the plaintext health-only listener is the one a
    // HEALTHCHECK without certificates can ask; it is used when set,
    // unless this command itself speaks TLS.
    let health: Option<std::net::SocketAddr> = figment
        .extract_inner("health_address")
        .map_err(|e| format!("cannot read health_address: {e}"))?;
    let mut address: std::net::SocketAddr = match health.filter(|_| args.tls.tls_ca.is_none()) {
        Some(address) => address,
        None => figment
            .extract_inner("grpc_address")
            .map_err(|e| format!("cannot read grpc_address: {e}"))?,
    };
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(address.to_string())
}

fn health(args: HealthArgs) -> ExitCode {
    let addr = match health_address(&args) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("oxserve health: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    let tls = match args.tls.client_config() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("oxserve health: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::time::timeout(args.timeout, check(&addr, &args.service, tls)).await
    });
    let shown = if args.service.is_empty() {
        "\"\""
    } else {
        args.service.as_str()
    };
    match result {
        Ok(Ok((status, reason))) => {
            // The server's reason goes with the status, so that Docker's
            // health log (`docker inspect`) says why a container is unhealthy.
            match reason {
                Some(reason) => println!("{shown}: {} ({reason})", status.as_str_name()),
                None => println!("{shown}: {}", status.as_str_name()),
            }
            if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("oxserve health: {addr}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "oxserve health: {addr}: no answer within {:?}",
                args.timeout
            );
            ExitCode::FAILURE
        }
    }
}

/// The status and, when the server gives one, its reason for it.
async fn check(
    addr: &str,
    service: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<
    (
        tonic_health::pb::health_check_response::ServingStatus,
        Option<String>,
    ),
    String,
> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("invalid address: {e}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("invalid TLS settings: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", with_causes(&e)))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    let reason = response
        .metadata()
        .get_bin(oxserve::HEALTH_REASON_KEY)
        .and_then(|value| value.to_bytes().ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok((response.into_inner().status(), reason))
}

/// An error and its sources on one line: tonic's "transport error" alone
/// does not say that, e.g., the server's certificate has an unknown issuer.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
