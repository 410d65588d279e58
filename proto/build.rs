//! Compiles the `.proto` files beside this crate into messages and both
//! client and server stubs, and writes the descriptor set that the server's
//! reflection service and its `config.pbtxt` parser read.
//!
//! No system `protoc` is needed: `protox` parses the protos in pure Rust, so
//! a fresh machine builds with nothing but cargo.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["grpc_service.proto", "model_config.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit these itself when handed a descriptor set.
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // `file_descriptor_set_path` only applies when protoc runs, so the set is
    // written here.
    std::fs::write(out_dir.join("oxserve_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // No `connect()` helper: it needs tonic's transport, which a user of
        // the messages may not want; callers bring their own channel.
        .build_transport(false)
        // Tensor payloads are `Bytes`: decoding slices the received buffer
        // instead of copying, and a client retrying a request shares its
        // tensors between attempts instead of copying them.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .bytes(".inference.InferTensorContents.bytes_contents")
        // Model files uploaded with RepositoryModelLoad: large, and kept.
        .bytes(".inference.ModelRepositoryParameter.bytes_param")
        .compile_fds(fds)?;
    Ok(())
}
