//! A typed client for inference servers that speak the KServe v2 / Open
//! Inference Protocol over gRPC, such as oxserve.
//!
//! [`Client`] wraps the protocol's RPCs (liveness, readiness, metadata,
//! inference) and the standard `grpc.health.v1.Health` check. Inference
//! requests are built with [`Client::infer`], which encodes Rust slices in
//! the protocol's raw form; an [`InferResponse`]'s [`Output`]s decode back to
//! `Vec`s with every length checked, so a malformed response is an error,
//! never a panic. [`pb`] has the wire messages for full control.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use oxserve_client::{Client, ServingStatus};
//!
//! #[tokio::main]
//! async fn main() -> oxserve_client::Result<()> {
//!     let client = Client::builder("http://127.0.0.1:8001")
//!         .connect_timeout(Duration::from_secs(2))
//!         .timeout(Duration::from_secs(10))
//!         .connect()
//!         .await?;
//!     assert!(client.is_ready().await?);
//!     assert_eq!(
//!         client.health_check("inference.GRPCInferenceService").await?,
//!         ServingStatus::Serving
//!     );
//!
//!     let image = vec![0.5f32; 784];
//!     let response = client
//!         .infer("mlp")
//!         .id("req-1")
//!         .input("input", &[1, 784], &image)
//!         .output("output")
//!         .send()
//!         .await?;
//!     let output = response.output("output").expect("requested above");
//!     let scores: Vec<f32> = output.as_f32()?;
//!     println!("{:?} {scores:?}", output.shape());
//!
//!     // Server errors keep their gRPC code.
//!     let missing = client.infer("no-such-model").send().await.unwrap_err();
//!     assert_eq!(missing.code(), Some(tonic::Code::NotFound));
//!     Ok(())
//! }
//! ```

mod client;
pub mod codec;
mod datatype;
mod error;
mod infer;
pub mod pb;
mod response;

#[cfg(test)]
mod mock;

pub use client::{Client, ClientBuilder, DEFAULT_MAX_MESSAGE_SIZE, ServingStatus};
pub use codec::Element;
pub use datatype::{Datatype, UnknownDatatype};
pub use error::{Error, Result};
pub use infer::InferBuilder;
pub use response::{InferResponse, Output};
