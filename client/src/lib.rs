//! A typed client for inference servers that speak the KServe v2 / Open
//! Inference Protocol over gRPC (`inference.GRPCInferenceService`), such as
//! oxserve, Triton or KServe's Python server.
//!
//! - [`Client`] wraps every RPC: liveness, readiness, metadata, inference,
//!   the standard `grpc.health.v1.Health` check and Triton's extensions
//!   (`ModelConfig`, `ModelStatistics`, streaming with
//!   [`Client::stream_infer`]).
//! - [`Client::infer`] builds a request from Rust slices without touching
//!   protos, sent in the protocol's raw encoding; the response's [`Output`]s
//!   read back as `Vec`s of any datatype with every length checked, so a
//!   malformed response is an [`Error`], never a panic.
//! - [`Error`] keeps the gRPC code and message of server errors, and has
//!   distinct variants for connecting, configuration, decoding and the
//!   caller's own mistakes.
//! - One client can balance requests over several servers
//!   ([`Client::balanced`]) or over the addresses of a DNS name such as a
//!   Kubernetes headless Service ([`Client::dns`]), retrying `UNAVAILABLE`
//!   with backoff ([`RetryPolicy`]).
//! - [`pb`] has the wire messages and the generated client for full
//!   control; they, [`DataType`] and the raw encoding under [`codec`] are
//!   the `oxserve-proto` crate's, shared with the oxserve server.
//!
//! # Quick start
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
//!     let data = vec![0.5f32; 784];
//!     let response = client
//!         .infer("mlp")
//!         .id("req-1")
//!         .input("input", [1, 784], &data[..])
//!         .output("output")
//!         .send()
//!         .await?;
//!     let output = response.try_output("output")?;
//!     let scores: Vec<f32> = output.as_f32()?;
//!     println!("{:?} {scores:?}", output.shape());
//!
//!     // BYTES in from anything byte-like, out as bytes or strings.
//!     let response = client
//!         .infer("intent")
//!         .input_bytes("text", [2, 1], &["hello there", "thanks!"])
//!         .send()
//!         .await?;
//!     let labels: Vec<String> = response.try_output("label")?.as_strings()?;
//!     println!("{labels:?}");
//!
//!     // Server errors keep their gRPC code and message.
//!     let missing = client.infer("no-such-model").send().await.unwrap_err();
//!     assert_eq!(missing.code(), Some(tonic::Code::NotFound));
//!     Ok(())
//! }
//! ```
//!
//! # Datatypes
//!
//! Each protocol element type is a [`DataType`]; [`Output::dtype`] parses an
//! output's.
//!
//! | protocol | send with | read with |
//! |---|---|---|
//! | `BOOL`, `UINT8`..`UINT64`, `INT8`..`INT64`, `FP32`, `FP64` | [`InferBuilder::input`] with `&[bool]`, `&[u8]`, ... `&[f64]` | [`Output::as_bool`], [`Output::as_u8`], ... [`Output::to_vec`] |
//! | `FP16`, `BF16` | `&[half::f16]` / `&[half::bf16]` (feature `half`), or [`InferBuilder::input_raw`] | `as_f16` / `as_bf16` (feature `half`), or [`Output::raw`] |
//! | `BYTES` | [`InferBuilder::input_bytes`] with `&[impl AsRef<[u8]>]` | [`Output::as_bytes`] (`Vec<Vec<u8>>`), [`Output::as_strings`] |
//! | any, as `ndarray` arrays (feature `ndarray`) | `InferBuilder::input_array` | `Output::to_array` |
//!
//! Readers accept both the raw encoding (`raw_output_contents`, what oxserve
//! and Triton send) and typed `contents` (what some servers, such as
//! KServe's Python server, send for lists).
//!
//! # Several servers, retries
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use oxserve_client::{Client, RetryPolicy};
//!
//! # async fn run() -> oxserve_client::Result<()> {
//! // Every request goes to the next address in turn; an UNAVAILABLE answer
//! // (server down, restarting, shedding load) is retried on the next one.
//! let client = Client::dns("http://oxserve-headless.models.svc.cluster.local:8001")
//!     .resolve_interval(Duration::from_secs(5))
//!     .retry(
//!         RetryPolicy::default()
//!             .max_attempts(4)
//!             .backoff(Duration::from_millis(20), Duration::from_secs(1)),
//!     )
//!     .connect()
//!     .await?;
//! println!("balancing over {:?}", client.endpoints());
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `tls`: `https://` endpoints and `ClientBuilder::tls` (rustls, with
//!   the operating system's roots by default).
//! - `half`: `half::f16` and `half::bf16` as `FP16` / `BF16` elements.
//! - `ndarray`: `InferBuilder::input_array` and `Output::to_array`.
//!
//! The crate's `examples/` hold runnable programs: `infer_mlp`,
//! `classify_text`, `health_metadata` and `concurrent`.

#[cfg(feature = "ndarray")]
mod array;
mod balance;
mod builder;
mod client;
pub mod codec;
mod error;
mod health;
mod infer;
pub mod pb;
mod response;
mod retry;
mod stream;

#[cfg(test)]
mod mock;

pub use builder::{ClientBuilder, DEFAULT_RESOLVE_INTERVAL, DEFAULT_USER_AGENT};
pub use client::{Client, DEFAULT_MAX_MESSAGE_SIZE};
pub use codec::Element;
pub use error::{BoxError, Error, Result};
pub use health::ServingStatus;
pub use infer::InferBuilder;
pub use oxserve_proto::{DataType, UnknownDataType};
pub use response::{InferResponse, Output};
pub use retry::{RetryEvent, RetryPolicy};
pub use stream::{InferSender, InferStream};

/// The former name of [`DataType`].
#[deprecated(
    since = "0.1.0",
    note = "renamed to `DataType`, shared with `oxserve-proto`"
)]
pub type Datatype = DataType;

/// The former name of [`UnknownDataType`].
#[deprecated(
    since = "0.1.0",
    note = "renamed to `UnknownDataType`, shared with `oxserve-proto`"
)]
pub type UnknownDatatype = UnknownDataType;

/// TLS settings for [`ClientBuilder::tls`], re-exported from tonic.
#[cfg(feature = "tls")]
pub mod tls {
    pub use tonic::transport::{Certificate, ClientTlsConfig, Identity};
}

#[cfg(test)]
mod tests {
    #[test]
    #[expect(deprecated, reason = "the old names must keep working")]
    fn the_old_datatype_names_still_work() {
        let fp16: crate::Datatype = "FP16".parse().unwrap();
        assert_eq!(fp16, crate::Datatype::Fp16);
        let unknown: crate::UnknownDatatype = "fp16".parse::<crate::Datatype>().unwrap_err();
        assert_eq!(unknown.0, "fp16");
    }
}
