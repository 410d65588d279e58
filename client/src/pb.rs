//! The protocol's messages and raw gRPC client, from
//! [`oxserve_proto::inference`].
//!
//! Use these to build exact wire messages for
//! [`Client::infer_raw`](crate::Client::infer_raw), or to call an RPC the
//! typed [`Client`](crate::Client) does not wrap yet through
//! [`Client::inference_client`](crate::Client::inference_client).
//!
//! Tensor payloads (`raw_input_contents`, `raw_output_contents`,
//! `bytes_contents`) are [`bytes::Bytes`]: a `Vec<u8>` converts with
//! `.into()` without copying, and cloning a message shares its tensors.
//! `InferParameter` converts from `bool`, `i64`, `u64`, `f64` and strings.

pub use oxserve_proto::inference::*;

pub use grpc_inference_service_client::GrpcInferenceServiceClient;
