//! Finding and loading the ONNX Runtime library, once per process.
//!
//! `ort` is built with `load-dynamic`: nothing about ONNX Runtime is linked at
//! build time. Plain `ort::init()` panics when the library is missing, so the
//! path is resolved here and a missing runtime becomes an error that names
//! the fix.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::BackendError;

/// The library file name on this platform (`libonnxruntime.so` on Linux).
fn library_name() -> String {
    format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Where `scripts/setup.sh` links the runtime from the pinned wheel. Only
/// meaningful for binaries built from this checkout (the server, its tests
/// and benches), which is exactly who needs it.
fn project_local() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".oxserve/onnxruntime")
        .join(library_name())
}

/// Candidate paths in the order they are tried: the configured path, or
/// else `ORT_DYLIB_PATH`, or else beside the executable (and its `lib/`),
/// then the project-local set-up location.
fn candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    // An explicit setting is a promise: a wrong one is an error, never a
    // silent fall-back to some other copy of the library.
    if let Some(path) = configured {
        return vec![path.to_path_buf()];
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let mut paths = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        paths.push(dir.join(library_name()));
        paths.push(dir.join("lib").join(library_name()));
    }
    paths.push(project_local());
    paths
}

/// The first candidate that exists.
fn locate(configured: Option<&Path>) -> Result<PathBuf, BackendError> {
    let searched = candidates(configured);
    searched
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(BackendError::RuntimeNotFound {
            configured: configured.is_some() || searched.len() == 1,
            searched,
        })
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first
/// use. ONNX Runtime allows one environment per process, ever, so tests that
/// start several servers share it; the first caller's library path wins.
pub fn environment(configured: Option<&Path>) -> Result<Environment, BackendError> {
    // Locate first so that a missing library is reported with the paths
    // searched, and cached so that every later caller sees the same outcome.
    let result = ENVIRONMENT.get_or_init(|| {
        let path = locate(configured).map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        let env = builder
            .with_name("oxserve")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    });
    result.clone().map_err(BackendError::Runtime)
}
