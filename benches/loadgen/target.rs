//! The server under load: one started in this process, and connecting to a
//! server (in-process or separate) once it is up and its model ready.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use oxserve_client::{Client, RetryPolicy};
use tonic::Code;

use super::Args;

/// Starts oxserve in this process on its own runtime; returns its address
/// and the means to stop it.
pub(crate) fn serve_in_process(
    args: &Args,
    repository: PathBuf,
) -> Result<
    (
        String,
        tokio::runtime::Runtime,
        tokio::sync::oneshot::Sender<()>,
    ),
    String,
> {
    let mut config = oxserve::Config {
        model_repository: repository,
        grpc_address: "127.0.0.1:0".parse().expect("a valid address"),
        // Metrics stay on, as in production, on a port of their own.
        metrics_address: "127.0.0.1:0".parse().expect("a valid address"),
        // REST too, as in production, off Triton's port.
        http_address: "127.0.0.1:0".parse().expect("a valid address"),
        strict_readiness: false,
        ..oxserve::Config::default()
    };
    if let Some(v) = args.max_batch_size {
        config.max_batch_size = oxserve::BatchSize::Fixed(v);
    }
    if let Some(v) = &args.preferred_batch_sizes {
        config.preferred_batch_sizes = v.clone();
    }
    if let Some(v) = args.max_queue_delay {
        config.max_queue_delay = v;
    }
    if let Some(v) = args.max_queue_size {
        config.max_queue_size = v;
    }
    if let Some(v) = args.instances {
        config.instances = oxserve::InstanceCount::Fixed(v);
    }
    if let Some(v) = args.intra_op_threads {
        config.intra_op_threads = v;
    }
    config.validate().map_err(|e| e.to_string())?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("oxserve-rt");
    if let Some(n) = args.server_threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.build().map_err(|e| e.to_string())?;
    let listeners = runtime
        .block_on(oxserve::Listeners::bind(&config))
        .map_err(|e| e.to_string())?;
    let addr = listeners.grpc.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(async move {
        let result = oxserve::run(config, listeners, async move {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = result {
            eprintln!("loadgen: in-process server failed: {e}");
        }
    });
    Ok((format!("http://{addr}"), runtime, stop))
}

/// One connection, made lazily: a server still starting refuses
/// connections, which [`wait_ready`] waits out.
pub(crate) async fn connect(args: &Args, target: &str) -> Result<Client, String> {
    Client::builder(target.to_string())
        .connect_timeout(Duration::from_secs(5))
        .timeout(args.timeout)
        .retry(RetryPolicy::never())
        .connect_lazy()
        .map_err(|e| e.to_string())
}

/// Waits (up to `--wait`) until the server is ready for inference and the
/// model to load is ready.
///
/// Readiness comes from `grpc.health.v1` where the server has it (oxserve,
/// Triton); KServe's and MLServer's Python servers do not, and answer
/// UNIMPLEMENTED, so then the protocol's own `ServerReady` says.
pub(crate) async fn wait_ready(args: &Args, client: &Client) -> Result<(), String> {
    let deadline = Instant::now() + args.wait;
    loop {
        let mut last;
        let server_ready = match client.health_check("inference.GRPCInferenceService").await {
            Ok(status) => {
                last = format!("health: {status:?}");
                status.is_serving()
            }
            Err(e) if matches!(e.code(), Some(Code::Unimplemented | Code::NotFound)) => {
                match client.is_ready().await {
                    Ok(ready) => {
                        last = format!("ServerReady: {ready}");
                        ready
                    }
                    Err(e) => {
                        last = format!("ServerReady: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        };
        if server_ready {
            match client
                .model_ready(&args.model, args.version.as_deref())
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => last = format!("model '{}' is not ready", args.model),
                Err(e) => last = format!("model '{}': {e}", args.model),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within {:?} (last: {last})", args.wait));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
