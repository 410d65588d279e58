//! Classifies a (synthetic) handwritten digit with the example `mlp` model.
//!
//! ```text
//! scripts/serve-examples.sh                      # in one terminal
//! cargo run -p oxserve-client --example infer_mlp -- http://127.0.0.1:8001
//! ```

use std::time::Duration;

use oxserve_client::Client;

#[tokio::main]
async fn main() -> oxserve_client::Result<()> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8001".into());
    let client = Client::builder(endpoint)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;

    // A 28x28 "1": a vertical bar in the middle, values in [0, 1], row-major.
    let image: Vec<f32> = (0..28 * 28)
        .map(|i| {
            let (row, col) = (i / 28, i % 28);
            if (4..24).contains(&row) && (13..16).contains(&col) {
                1.0
            } else {
                0.0
            }
        })
        .collect();

    let response = client
        .infer("mlp")
        .id("digit-1")
        .input("input", [1, 784], &image[..])
        .output("output")
        .send()
        .await?;
    let output = response.try_output("output")?;
    let scores = output.as_f32()?;
    println!(
        "model {} v{} answered {} with shape {:?}",
        response.model_name(),
        response.model_version(),
        response.id(),
        output.shape()
    );

    let mut ranked: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (digit, score) in ranked.iter().take(3) {
        println!("  digit {digit}: {score:.3}");
    }
    Ok(())
}
