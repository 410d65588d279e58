//! ONNX Runtime: the process-wide environment, one session per model
//! instance, and the copy of tensors in and out of it.
//!
//! An [`Instance`] is the scheduler's [`Executor`](crate::scheduler::Executor):
//! it is driven from a thread the scheduler owns, never from the async
//! runtime, because `Session::run` blocks and takes `&mut self`.

mod arena;
mod batch;
mod options;
mod providers;
mod runtime;
mod session;
mod strings;
mod text;
mod types;

use std::path::PathBuf;

pub use options::{GpuOptions, Memory, SessionOptions, Threads};
pub(crate) use providers::Device;
pub use runtime::environment;
pub use session::{Instance, ModelSource};

/// What went wrong inside ONNX Runtime or while setting it up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The runtime library is nowhere to be found.
    #[error(
        "ONNX Runtime library not found (searched: {}). {}",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        if *.configured {
            "Point the 'onnxruntime_library' setting (--onnxruntime-library / OXSERVE_ONNXRUNTIME_LIBRARY) or ORT_DYLIB_PATH at libonnxruntime.so from the onnxruntime 1.31 wheel."
        } else {
            "Run scripts/setup.sh to install it from the pinned onnxruntime wheel, or set --onnxruntime-library / OXSERVE_ONNXRUNTIME_LIBRARY (or ORT_DYLIB_PATH) to libonnxruntime.so from the onnxruntime 1.31 wheel."
        }
    )]
    RuntimeNotFound {
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
        /// Whether the path came from configuration or `ORT_DYLIB_PATH`.
        configured: bool,
    },
    /// The library was found but could not be loaded or initialised.
    #[error("{0}")]
    Runtime(String),
    /// A model file could not be turned into a session.
    #[error("cannot load {source_name}: {reason}")]
    Load {
        /// The model file, or where its bytes came from.
        source_name: String,
        /// ONNX Runtime's explanation.
        reason: String,
    },
    /// A model input or output whose type the protocol cannot carry.
    #[error(
        "{source_name}: {what} '{tensor}' has type {ty}, which the inference protocol cannot carry"
    )]
    Unsupported {
        /// The model file, or where its bytes came from.
        source_name: String,
        /// "input" or "output".
        what: &'static str,
        /// Tensor name.
        tensor: String,
        /// The ONNX type, described.
        ty: String,
    },
    /// Inference itself failed.
    #[error("inference failed: {0}")]
    Run(String),
    /// ONNX Runtime refused a value of the input as an invalid argument
    /// (an index out of a table's range, say): the request's fault.
    #[error("the model rejected the input: {0}")]
    Rejected(String),
}
