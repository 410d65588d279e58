//! Compiles the inference protocol's proto into client stubs.
//!
//! No system `protoc` is needed: `protox` parses the proto in pure Rust.
//! A second, server-only pass writes the stubs the crate's own unit tests use
//! to run a mock server; it reuses the client's message types (`extern_path`)
//! and is compiled only under `cfg(test)`.

use std::{env, fs, path::PathBuf};

const PROTO: &str = "../proto/grpc_service.proto";
const INCLUDE: &str = "../proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit this itself when handed a descriptor set.
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], [INCLUDE])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds.clone())?;

    let mock_dir = out_dir.join("mock_server");
    fs::create_dir_all(&mock_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".inference", "crate::pb")
        .out_dir(&mock_dir)
        .compile_fds(fds)?;
    Ok(())
}
