//! Execution providers: which ones the loaded ONNX Runtime library has, and
//! registering the GPU ones on a session.
//!
//! The CPU wheel has only the CPU provider; the `onnxruntime-gpu` wheel adds
//! CUDA and TensorRT. oxserve registers GPU providers only when built with
//! the `cuda` feature; a model that asks for a GPU otherwise gets the
//! fallback or the error its instance kind calls for.

use ort::session::builder::SessionBuilder;

/// Where a model's instances run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// The CPU provider.
    Cpu,
    /// A GPU, through CUDA (and TensorRT first, if asked for).
    Gpu {
        /// CUDA device id.
        device_id: i32,
        /// Try TensorRT before CUDA.
        tensorrt: bool,
        /// Fail the load when no GPU provider is usable (Triton's
        /// KIND_GPU); otherwise fall back to CPU with a warning (KIND_AUTO).
        required: bool,
    },
}

/// Names of the providers the loaded library offers, e.g.
/// `["CUDAExecutionProvider", "CPUExecutionProvider"]`.
pub(super) fn available() -> Vec<String> {
    let api = ort::api();
    let mut names: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut len: std::ffi::c_int = 0;
    // SAFETY: ONNX Runtime fills `names` with `len` C strings, which are
    // copied here and released with the matching call.
    unsafe {
        if ort::Error::result_from_status((api.GetAvailableProviders)(&mut names, &mut len))
            .is_err()
        {
            return Vec::new();
        }
        let list = (0..usize::try_from(len).unwrap_or(0))
            .map(|i| {
                std::ffi::CStr::from_ptr(*names.add(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let _ = ort::Error::result_from_status((api.ReleaseAvailableProviders)(names, len));
        list
    }
}

/// Why a GPU could not be used.
pub(super) fn gpu_unavailable_reason() -> Option<String> {
    if !cfg!(feature = "cuda") {
        return Some(
            "oxserve was built without the `cuda` feature (build with --features cuda)".into(),
        );
    }
    let providers = available();
    if !providers.iter().any(|p| p == "CUDAExecutionProvider") {
        return Some(format!(
            "the ONNX Runtime library has no CUDA provider (it offers {}); use the onnxruntime-gpu wheel",
            providers.join(", ")
        ));
    }
    None
}

/// Registers the GPU providers for `device` on `builder`.
#[cfg(feature = "cuda")]
pub(super) fn register_gpu(
    builder: SessionBuilder,
    device_id: i32,
    tensorrt: bool,
    options: &super::GpuOptions,
) -> Result<SessionBuilder, String> {
    use ort::ep;
    let mut providers = Vec::new();
    if tensorrt && available().iter().any(|p| p == "TensorrtExecutionProvider") {
        let mut trt = ep::TensorRT::default()
            .with_device_id(device_id)
            .with_fp16(options.tensorrt_fp16)
            .with_engine_cache(options.tensorrt_engine_cache);
        if let Some(path) = &options.tensorrt_engine_cache_path {
            trt = trt.with_engine_cache_path(path);
        }
        if let Some(bytes) = options.tensorrt_max_workspace {
            trt = trt.with_max_workspace_size(bytes);
        }
        providers.push(trt.build());
    }
    let mut cuda = ep::CUDA::default().with_device_id(device_id);
    if let Some(limit) = options.mem_limit {
        cuda = cuda.with_memory_limit(limit);
    }
    if options.arena_same_as_requested {
        cuda = cuda.with_arena_extend_strategy(ep::ArenaExtendStrategy::SameAsRequested);
    }
    providers.push(cuda.build().error_on_failure());
    builder
        .with_execution_providers(providers)
        .map_err(|e| e.to_string())
}

/// Without the `cuda` feature there is nothing to register;
/// [`gpu_unavailable_reason`] says so before this is reached.
#[cfg(not(feature = "cuda"))]
pub(super) fn register_gpu(
    _builder: SessionBuilder,
    _device_id: i32,
    _tensorrt: bool,
    _options: &super::GpuOptions,
) -> Result<SessionBuilder, String> {
    Err("oxserve was built without the `cuda` feature".into())
}
