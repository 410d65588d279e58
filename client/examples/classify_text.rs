//! Classifies sentences by intent with the example `intent` model: BYTES
//! in (one string per row), BYTES and FP32 out.
//!
//! ```text
//! cargo run -p oxserve-client --example classify_text -- http://127.0.0.1:8001 "thanks!" "bye"
//! ```

use oxserve_client::Client;

#[tokio::main]
async fn main() -> oxserve_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8001".into());
    let mut texts: Vec<String> = args.collect();
    if texts.is_empty() {
        texts = vec![
            "Hi there, how are you?".into(),
            "thank you so much".into(),
            "see you tomorrow, bye".into(),
        ];
    }

    let client = Client::connect(endpoint).await?;
    let response = client
        .infer("intent")
        .input_bytes("text", [texts.len() as i64, 1], &texts)
        .send()
        .await?;

    let labels = response.try_output("label")?.as_strings()?;
    let probabilities = response.try_output("probabilities")?;
    let classes = probabilities.shape().last().copied().unwrap_or(1).max(1) as usize;
    let probabilities = probabilities.as_f32()?;
    for ((text, label), row) in texts.iter().zip(&labels).zip(probabilities.chunks(classes)) {
        let confidence = row.iter().copied().fold(0.0f32, f32::max);
        println!("{label:>10} ({confidence:.2})  {text}");
    }
    Ok(())
}
