//! Compiles `proto/` into the server's gRPC stubs and writes the descriptor
//! set that the reflection service serves.
//!
//! No system `protoc` is needed: `protox` parses the protos in pure Rust, so a
//! fresh machine builds with nothing but cargo.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["proto/grpc_service.proto", "proto/model_config.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit these itself when handed a descriptor set.
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // `file_descriptor_set_path` only applies when protoc runs, so the set the
    // reflection service serves is written here.
    std::fs::write(out_dir.join("oxserve_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(false)
        // Tensor payloads decode as `Bytes` slices of the received buffer
        // instead of fresh `Vec`s: one copy fewer on the hot path.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .bytes(".inference.InferTensorContents.bytes_contents")
        .compile_fds(fds)?;
    Ok(())
}
