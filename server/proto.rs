//! Code generated from `proto/` by build.rs, and the descriptor set the
//! reflection service serves.

/// The `inference` package: KServe v2 messages and the service trait.
#[expect(missing_docs, reason = "generated code; the .proto documents it")]
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` of every proto the server compiles.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/oxserve_descriptor.bin"));
