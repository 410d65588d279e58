//! Compiles the inference protocol's proto, and every proto it imports from
//! `../proto`, into client stubs.
//!
//! No system `protoc` is needed: `protox` parses the protos in pure Rust.
//! A second, server-only pass writes the stubs the crate's own unit tests use
//! to run a mock server; it reuses the client's message types (`extern_path`)
//! and is compiled only under `cfg(test)`. It generates default method
//! bodies (UNIMPLEMENTED), so the mock keeps compiling when the proto gains
//! an RPC the mock does not serve.

use std::{env, fs, path::PathBuf};

const PROTO: &str = "../proto/grpc_service.proto";
const INCLUDE: &str = "../proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit this itself when handed a descriptor
    // set. A directory makes cargo watch every file in it, so a proto that
    // grpc_service.proto starts importing is covered too.
    println!("cargo:rerun-if-changed={INCLUDE}");
    let fds = protox::compile([PROTO], [INCLUDE])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds.clone())?;

    let mock_dir = out_dir.join("mock_server");
    fs::create_dir_all(&mock_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .generate_default_stubs(true)
        .extern_path(".inference", "crate::pb")
        .out_dir(&mock_dir)
        .compile_fds(fds)?;
    Ok(())
}
