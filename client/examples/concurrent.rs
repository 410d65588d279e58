//! Many requests at once from one client: clones share the connections,
//! each task awaits its own responses, and with several endpoints the
//! requests are balanced over them. Prints throughput and latencies.
//!
//! ```text
//! cargo run --release -p oxserve-client --example concurrent -- \
//!     http://127.0.0.1:8001,http://127.0.0.1:8002 16 50
//! #   endpoints (comma-separated)           tasks  requests per task
//! ```

use std::time::{Duration, Instant};

use oxserve_client::{Client, RetryPolicy};

#[tokio::main]
async fn main() -> oxserve_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoints = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8001".into());
    let tasks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let per_task: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);

    let client = Client::balanced(endpoints.split(','))
        .timeout(Duration::from_secs(10))
        .retry(RetryPolicy::default().max_attempts(3))
        .connect()
        .await?;
    println!(
        "{} tasks x {per_task} requests over {:?}",
        tasks,
        client.endpoints()
    );

    let image = vec![0.5f32; 784];
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let client = client.clone();
            let image = image.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                let mut failures = 0usize;
                for i in 0..per_task {
                    let sent = Instant::now();
                    let result = client
                        .infer("mlp")
                        .id(format!("{task}-{i}"))
                        .input("input", [1, 784], &image)
                        .send()
                        .await;
                    match result {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(e) => {
                            failures += 1;
                            eprintln!("request {task}-{i}: {e}");
                        }
                    }
                }
                (latencies, failures)
            })
        })
        .collect();

    let mut latencies = Vec::new();
    let mut failures = 0;
    for handle in handles {
        let (mut l, f) = handle.await.expect("a request task panicked");
        latencies.append(&mut l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} ok, {failures} failed in {elapsed:.2?}: {:.0} requests/s, p50 {:.2?}, p99 {:.2?}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.50),
        percentile(0.99),
    );
    Ok(())
}
