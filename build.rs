//! Generates the server side of `inference.GRPCInferenceService` once more,
//! for the server alone, with [`CallerCodec`] instead of tonic's default
//! codec: a request body that is not a valid protobuf message is the
//! caller's fault (INVALID_ARGUMENT), not the server's (tonic's default
//! answers INTERNAL). The messages themselves come from `oxserve-proto`
//! (`extern_path`), so the types are the ones the client SDK uses; only the
//! service trait and its router are generated here.
//!
//! [`CallerCodec`]: server/grpc/codec.rs

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &["grpc_service.proto", "model_config.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        .extern_path(".inference", "::oxserve_proto::inference")
        .codec_path("crate::grpc::codec::CallerCodec")
        .out_dir(&out_dir)
        .compile_fds(fds)?;
    Ok(())
}
