//! The protocol oxserve speaks, in one place for the server, the client SDK
//! and the benchmarks: KServe v2 / Open Inference Protocol gRPC with
//! Triton's extensions.
//!
//! - [`inference`]: the messages, the generated client
//!   ([`inference::grpc_inference_service_client`]) and server
//!   ([`inference::grpc_inference_service_server`]) stubs, and Triton's
//!   model configuration messages. Tensor payloads (`raw_input_contents`,
//!   `raw_output_contents`, `bytes_contents`) are [`bytes::Bytes`], so
//!   decoding slices the received buffer and cloning a request shares its
//!   tensors.
//! - [`health`]: the standard `grpc.health.v1` messages and stubs.
//! - [`DataType`]: the protocol's tensor element types and their sizes.
//! - [`element_count`], [`BytesElements`], [`BytesWriter`]: the raw tensor
//!   encoding (flat, row-major, little-endian; `BYTES` elements each behind
//!   a 4-byte little-endian length).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of every message, for
//!   server reflection and for parsing `config.pbtxt` text.

mod datatype;
mod parameter;
mod raw;

pub use datatype::{DataType, UnknownDataType};
pub use raw::{BytesElements, BytesWriter, ElementTooLong, MalformedBytes, element_count};

/// The `inference` package: KServe v2 messages, Triton's extensions and
/// model configuration, and the `GRPCInferenceService` stubs.
#[expect(missing_docs, reason = "generated code; the .proto files document it")]
pub mod inference {
    tonic::include_proto!("inference");

    pub use infer_parameter::ParameterChoice;
}

/// `grpc.health.v1`: the standard health checking messages and stubs.
pub use tonic_health::pb as health;

/// Encoded `FileDescriptorSet` of every proto in this crate.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/oxserve_descriptor.bin"));
