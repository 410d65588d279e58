//! Asks a server about itself and its models: liveness, readiness, the
//! standard health check, metadata, and (where the server has Triton's
//! extensions) configuration and statistics.
//!
//! ```text
//! cargo run -p oxserve-client --example health_metadata -- http://127.0.0.1:8001 mlp intent
//! ```

use oxserve_client::{Client, Error};

#[tokio::main]
async fn main() -> oxserve_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8001".into());
    let mut models: Vec<String> = args.collect();
    if models.is_empty() {
        models = vec!["mlp".into(), "intent".into()];
    }
    let client = Client::connect(endpoint).await?;

    println!(
        "live: {}, ready: {}",
        client.is_live().await?,
        client.is_ready().await?
    );
    for service in ["", "inference.GRPCInferenceService"] {
        match client.health_check(service).await {
            Ok(status) => println!("health '{service}': {status:?}"),
            Err(e) => println!("health '{service}': {e}"),
        }
    }
    let server = client.server_metadata().await?;
    println!(
        "server {} {} (extensions: {})",
        server.name,
        server.version,
        server.extensions.join(", ")
    );

    for model in &models {
        println!(
            "\nmodel {model}: ready = {}",
            client.model_ready(model, None).await?
        );
        let meta = match client.model_metadata(model, None).await {
            Ok(meta) => meta,
            Err(e) => {
                println!("  {e}");
                continue;
            }
        };
        println!("  platform {}, versions {:?}", meta.platform, meta.versions);
        for t in &meta.inputs {
            println!("  input  {} {} {:?}", t.name, t.datatype, t.shape);
        }
        for t in &meta.outputs {
            println!("  output {} {} {:?}", t.name, t.datatype, t.shape);
        }
        // Triton extensions: a plain KServe server answers UNIMPLEMENTED.
        match client.model_config(model, None).await {
            Ok(config) => println!("  max batch size {:?}", config.max_batch_size),
            Err(e @ Error::Status { .. }) => println!("  no config: {e}"),
            Err(e) => return Err(e),
        }
        match client.model_statistics(Some(model), None).await {
            Ok(stats) => {
                for s in stats {
                    println!(
                        "  v{}: {} inferences in {} executions",
                        s.version, s.inference_count, s.execution_count
                    );
                }
            }
            Err(e) => println!("  no statistics: {e}"),
        }
    }
    Ok(())
}
