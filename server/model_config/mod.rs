//! Per-model configuration: Triton's `config.pbtxt` in the model's
//! directory, parsed against the project's own model-config proto, then
//! completed from the ONNX model and the server's defaults.
//!
//! Two steps, because some settings are needed to load the model at all
//! (which versions, which file, how many instances on which device) and the
//! rest can only be checked against what the loaded model declares:
//! [`LoadPlan::new`] before loading, [`complete`] after.

mod complete;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use prost_reflect::{DescriptorPool, DynamicMessage};

pub use complete::{Resolved, complete};

use crate::backend::Device;
use crate::proto::inference::model_instance_group::Kind;
use crate::proto::inference::model_version_policy::PolicyChoice;
use crate::proto::inference::{ModelConfig, ModelVersionPolicy};
use crate::tensor::DataType;

/// The file read from a model's directory.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// Server-wide defaults that complete a model's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Largest batch for models that can batch and set none.
    pub max_batch_size: usize,
    /// Preferred batch sizes for dynamic batching.
    pub preferred_batch_sizes: Vec<usize>,
    /// Longest a request waits for others to join its batch.
    pub max_queue_delay: Duration,
    /// Requests that may wait per model version.
    pub max_queue_size: usize,
    /// Instances per model when the config names none.
    pub instances: usize,
    /// ONNX Runtime intra-op threads per instance.
    pub intra_op_threads: usize,
}

/// A config.pbtxt as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Written {
    /// The parsed configuration.
    pub config: ModelConfig,
}

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

/// Parses config.pbtxt text. Unknown fields, wrong types and bad enum
/// values fail with the parser's message, which names the field.
pub fn parse(text: &str) -> Result<Written, String> {
    let pool = POOL
        .as_ref()
        .map_err(|e| format!("model config schema: {e}"))?;
    let descriptor = pool
        .get_message_by_name("inference.ModelConfig")
        .ok_or("model config schema lacks inference.ModelConfig")?;
    let text = colon_before_lists(text);
    let message =
        DynamicMessage::parse_text_format(descriptor, &text).map_err(|e| e.to_string())?;
    let config: ModelConfig = message.transcode_to().map_err(|e| e.to_string())?;
    Ok(Written { config })
}

/// Writes the optional `:` of `field [ ... ]` lists, which the text format
/// allows to be left out and Triton's own examples always leave out, but
/// prost-reflect's parser requires. Strings and comments are left alone;
/// no newline is added, so error line numbers stay right.
fn colon_before_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push(c);
                let mut escaped = false;
                for d in chars.by_ref() {
                    out.push(d);
                    match d {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        d if d == c || d == '\n' => break,
                        _ => {}
                    }
                }
            }
            '#' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '[' => {
                let before = out.trim_end().chars().last();
                if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '_') {
                    out.push(':');
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Reads `<model_dir>/config.pbtxt`, if there is one.
pub fn read(model_dir: &Path) -> Result<Option<Written>, String> {
    let path = model_dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// What loading a model needs before its ONNX file is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// File name inside each version directory.
    pub filename: String,
    /// One device per instance to create.
    pub instances: Vec<Device>,
    /// ONNX Runtime graph optimisation level (Triton's scale).
    pub graph_level: i32,
    policy: ModelVersionPolicy,
}

impl LoadPlan {
    /// The plan for a model with config `written` (or none).
    pub fn new(written: Option<&Written>, defaults: &Defaults) -> Result<LoadPlan, String> {
        let empty = ModelConfig::default();
        let config = written.map_or(&empty, |w| &w.config);
        let filename = if config.default_model_filename.is_empty() {
            crate::repository::MODEL_FILE.to_string()
        } else if config.default_model_filename.contains(['/', '\\'])
            || config.default_model_filename == ".."
        {
            return Err(format!(
                "default_model_filename: '{}' must be a file name inside the version directory",
                config.default_model_filename
            ));
        } else {
            config.default_model_filename.clone()
        };

        let tensorrt = accelerators(config)?;
        let mut instances = Vec::new();
        for (i, group) in config.instance_group.iter().enumerate() {
            let field = format!("instance_group[{i}]");
            if group.count < 0 {
                return Err(format!("{field}.count: {} is negative", group.count));
            }
            let count = usize::try_from(group.count.max(1)).unwrap_or(1);
            let kind = Kind::try_from(group.kind)
                .map_err(|_| format!("{field}.kind: unknown kind {}", group.kind))?;
            let gpu = |device_id: i32, required: bool| Device::Gpu {
                device_id,
                tensorrt,
                required,
            };
            match kind {
                Kind::Cpu => {
                    if !group.gpus.is_empty() {
                        return Err(format!("{field}.gpus: KIND_CPU instances take no GPUs"));
                    }
                    instances.extend(std::iter::repeat_n(Device::Cpu, count));
                }
                Kind::Gpu | Kind::Auto | Kind::Model => {
                    let required = kind == Kind::Gpu;
                    let gpus = if group.gpus.is_empty() {
                        vec![0]
                    } else {
                        group.gpus.clone()
                    };
                    for device_id in gpus {
                        instances.extend(std::iter::repeat_n(gpu(device_id, required), count));
                    }
                }
            }
        }
        if instances.is_empty() {
            instances = vec![Device::Cpu; defaults.instances.max(1)];
        }
        if instances.len() > 64 {
            return Err(format!(
                "instance_group: {} instances is more than 64",
                instances.len()
            ));
        }
        let graph_level = config
            .optimization
            .as_ref()
            .and_then(|o| o.graph.as_ref())
            .map_or(0, |g| g.level);
        Ok(LoadPlan {
            filename,
            instances,
            graph_level,
            policy: config.version_policy.clone().unwrap_or_default(),
        })
    }

    /// The versions to load out of those found on disk (ascending).
    pub fn select_versions(&self, found: &[u64]) -> Result<Vec<u64>, String> {
        match &self.policy.policy_choice {
            None => Ok(found.iter().rev().take(1).copied().collect()),
            Some(PolicyChoice::Latest(latest)) => {
                let n = latest.num_versions.max(1) as usize;
                let mut chosen: Vec<u64> = found.iter().rev().take(n).copied().collect();
                chosen.reverse();
                Ok(chosen)
            }
            Some(PolicyChoice::All(_)) => Ok(found.to_vec()),
            Some(PolicyChoice::Specific(specific)) => {
                let mut chosen = Vec::new();
                for &v in &specific.versions {
                    let v = u64::try_from(v).map_err(|_| {
                        format!("version_policy.specific.versions: {v} is negative")
                    })?;
                    if !found.contains(&v) {
                        return Err(format!(
                            "version_policy.specific.versions: version {v} has no directory"
                        ));
                    }
                    chosen.push(v);
                }
                chosen.sort_unstable();
                chosen.dedup();
                Ok(chosen)
            }
        }
    }

    /// The model file of `version` under `model_dir`.
    pub fn model_path(&self, model_dir: &Path, version: u64) -> PathBuf {
        model_dir.join(version.to_string()).join(&self.filename)
    }
}

/// Whether TensorRT was asked for; every accelerator must be one oxserve
/// can provide.
fn accelerators(config: &ModelConfig) -> Result<bool, String> {
    let Some(accelerators) = config
        .optimization
        .as_ref()
        .and_then(|o| o.execution_accelerators.as_ref())
    else {
        return Ok(false);
    };
    if let Some(cpu) = accelerators.cpu_execution_accelerator.first() {
        return Err(format!(
            "optimization.execution_accelerators.cpu_execution_accelerator: '{}' is not available; the onnxruntime wheel has only the default CPU provider",
            cpu.name
        ));
    }
    let mut tensorrt = false;
    for accelerator in &accelerators.gpu_execution_accelerator {
        match accelerator.name.as_str() {
            "tensorrt" => tensorrt = true,
            "cuda" => {}
            other => {
                return Err(format!(
                    "optimization.execution_accelerators.gpu_execution_accelerator: unknown accelerator '{other}' (use \"tensorrt\" or \"cuda\")"
                ));
            }
        }
    }
    Ok(tensorrt)
}

/// Triton's enum value for a datatype.
pub fn config_type(datatype: DataType) -> crate::proto::inference::DataType {
    use crate::proto::inference::DataType as T;
    match datatype {
        DataType::Bool => T::TypeBool,
        DataType::Uint8 => T::TypeUint8,
        DataType::Uint16 => T::TypeUint16,
        DataType::Uint32 => T::TypeUint32,
        DataType::Uint64 => T::TypeUint64,
        DataType::Int8 => T::TypeInt8,
        DataType::Int16 => T::TypeInt16,
        DataType::Int32 => T::TypeInt32,
        DataType::Int64 => T::TypeInt64,
        DataType::Fp16 => T::TypeFp16,
        DataType::Bf16 => T::TypeBf16,
        DataType::Fp32 => T::TypeFp32,
        DataType::Fp64 => T::TypeFp64,
        DataType::Bytes => T::TypeString,
    }
}

#[cfg(test)]
mod tests;
