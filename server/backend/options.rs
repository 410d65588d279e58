//! How ONNX Runtime sessions are built and run: threads, graph
//! optimisation, memory, and the GPU providers' settings. Filled from the
//! server's settings and each model's config.pbtxt `parameters`, with the
//! names Triton's ONNX Runtime backend uses.

use super::providers::Device;

/// Threads of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threads {
    /// Threads inside one operator; 0 lets ONNX Runtime choose (every
    /// core of the host, which is why the server passes a number).
    pub intra_op: usize,
    /// Threads across operators, for `parallel` execution; 0 = ONNX
    /// Runtime's choice.
    pub inter_op: usize,
    /// Run independent operators in parallel (Triton's `execution_mode`
    /// 1); sequential otherwise.
    pub parallel: bool,
    /// Let idle intra-op threads spin for work instead of sleeping: lower
    /// latency for multi-threaded operators, at the price of CPU burnt
    /// while idle.
    pub spinning: bool,
}

/// Memory of one session (CPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// Use ONNX Runtime's memory arena (`enable_mem_arena`).
    pub arena: bool,
    /// Pre-plan allocations from the first run's shapes
    /// (`enable_mem_pattern`).
    pub pattern: bool,
    /// Give the arena's unused chunks back once runs need much less than
    /// it grew for, and when the instance goes idle
    /// (`memory.enable_memory_arena_shrinkage`; see `arena.rs`): resident
    /// memory falls back after a burst of large batches instead of staying
    /// at its peak.
    pub shrink_after_run: bool,
}

/// GPU provider settings (CUDA and TensorRT), used by GPU instances only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// CUDA: most device memory the session may use (`gpu_mem_limit`).
    pub mem_limit: Option<usize>,
    /// CUDA: grow the arena by what is asked for instead of powers of two
    /// (`arena_extend_strategy` 1).
    pub arena_same_as_requested: bool,
    /// TensorRT: build FP16 engines (`precision_mode` "FP16").
    pub tensorrt_fp16: bool,
    /// TensorRT: keep built engines on disk (`trt_engine_cache_enable`).
    pub tensorrt_engine_cache: bool,
    /// TensorRT: where engines are kept (`trt_engine_cache_path`).
    pub tensorrt_engine_cache_path: Option<String>,
    /// TensorRT: scratch memory limit (`max_workspace_size_bytes`).
    pub tensorrt_max_workspace: Option<usize>,
}

/// How sessions are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads.
    pub threads: Threads,
    /// Graph optimisation, Triton's scale: -1 none, 1 basic, 2 extended,
    /// 0 or 3+ all.
    pub graph_level: i32,
    /// CPU or GPU.
    pub device: Device,
    /// Memory.
    pub memory: Memory,
    /// GPU providers' settings.
    pub gpu: GpuOptions,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: Threads {
                intra_op: 1,
                inter_op: 0,
                parallel: false,
                spinning: false,
            },
            graph_level: 0,
            device: Device::Cpu,
            memory: Memory {
                arena: true,
                pattern: true,
                shrink_after_run: true,
            },
            gpu: GpuOptions::default(),
        }
    }
}
