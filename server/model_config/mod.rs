//! Per-model configuration: Triton's `config.pbtxt` in the model's
//! directory, parsed against the project's own model-config proto, then
//! completed from the ONNX model and the server's defaults.
//!
//! Two steps, because some settings are needed to load the model at all
//! (which versions, which file, how many instances on which device) and the
//! rest can only be checked against what the loaded model declares:
//! [`LoadPlan::new`] before loading, [`complete`] after.

mod complete;
mod runtime;
mod warmup;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use oxserve_proto::inference::model_instance_group::Kind;
use oxserve_proto::inference::model_version_policy::PolicyChoice;
use oxserve_proto::inference::{ModelConfig, ModelVersionPolicy};
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde::{Deserialize, Serialize};

#[cfg(test)]
use complete::Resolved;
pub(crate) use complete::{QueuePolicies, complete};
pub(crate) use runtime::Runtime;
pub(crate) use warmup::warmups;

use crate::backend::{Device, SessionOptions};

/// The file read from a model's directory.
pub(crate) const CONFIG_FILE: &str = "config.pbtxt";

/// The file each version directory holds unless `default_model_filename`
/// says otherwise.
pub(crate) const MODEL_FILE: &str = "model.onnx";

/// Platform reported for every model, as Triton's ONNX Runtime backend does.
pub(crate) const PLATFORM: &str = "onnxruntime_onnx";

/// Why a model's configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ModelConfigError {
    /// config.pbtxt exists but cannot be read.
    #[error("cannot read it: {reason}")]
    Read {
        /// The I/O error.
        reason: String,
    },
    /// The text is not a ModelConfig (syntax, unknown field, wrong type).
    #[error("{reason}")]
    Syntax {
        /// The parser's message, naming the line and field.
        reason: String,
    },
    /// A field whose value the server cannot honour, or that does not fit
    /// the ONNX model.
    #[error("{field}: {reason}")]
    Field {
        /// The field, as written in config.pbtxt (`instance_group[0].count`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A [`ModelConfigError::Field`].
pub(crate) fn field_error(field: impl Into<String>, reason: impl Into<String>) -> ModelConfigError {
    ModelConfigError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The largest batch, for models whose configuration sets none: picked by
/// the server, or a number (0 = no batching).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// The server learns each model's efficient batch size.
    Auto,
    /// At most this many rows (0: requests run one at a time).
    Fixed(usize),
}

impl Serialize for BatchSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Auto => s.serialize_str("auto"),
            BatchSize::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(auto_or_number(d)?.map_or(BatchSize::Auto, BatchSize::Fixed))
    }
}

/// How many instances a model gets when its configuration names none:
/// picked by the server, or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceCount {
    /// One per CPU the process may use, within a memory bound.
    Auto,
    /// This many.
    Fixed(usize),
}

impl Serialize for InstanceCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            InstanceCount::Auto => s.serialize_str("auto"),
            InstanceCount::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for InstanceCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(auto_or_number(d)?.map_or(InstanceCount::Auto, InstanceCount::Fixed))
    }
}

/// Reads a setting that is `auto` (`None`) or a number, written as a
/// number or as text.
fn auto_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("too large")),
        Raw::Text(t) if t == "auto" => Ok(None),
        Raw::Text(t) => t.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("'{t}' is neither \"auto\" nor a number"))
        }),
    }
}

/// Whether the server picks a model's instances: its configuration names
/// none and the server's `instances` is `auto`.
pub(crate) fn server_picks_instances(config: &ModelConfig, defaults: &Defaults) -> bool {
    config.instance_group.is_empty() && defaults.instances == InstanceCount::Auto
}

/// The most instances one model version may have.
pub(crate) const MAX_INSTANCES: usize = 64;

/// With automatic instances, the most memory the instances' copies of a
/// model may take together: a model of 1 GiB or more gets one instance.
pub(crate) const AUTO_INSTANCE_MEMORY: u64 = 1 << 30;

/// The most a batch size the server picks may grow to.
pub(crate) const AUTO_BATCH_CAP: usize = 1024;

/// Server-wide defaults that complete a model's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Defaults {
    /// Largest batch for models that can batch and set none.
    pub max_batch_size: BatchSize,
    /// Longest one execution may take when the server picks the batch
    /// size.
    pub batch_latency_budget: Duration,
    /// Whether requests with more rows than a batch are run in chunks
    /// (otherwise refused, as Triton does).
    pub split_large_requests: bool,
    /// Preferred batch sizes for dynamic batching.
    pub preferred_batch_sizes: Vec<usize>,
    /// Longest a request waits for others to join its batch.
    pub max_queue_delay: Duration,
    /// Executions shorter than this run a lone request inline; 0 never.
    pub inline_threshold: Duration,
    /// Requests that may wait per model version.
    pub max_queue_size: usize,
    /// Instances per model when the config names none.
    pub instances: InstanceCount,
    /// ONNX Runtime intra-op threads per instance.
    pub intra_op_threads: usize,
    /// Whether idle intra-op threads spin for work.
    pub spinning: bool,
    /// Whether arenas give unused memory back after each run.
    pub shrink_arena: bool,
}

/// A config.pbtxt as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Written {
    /// The parsed configuration.
    pub config: ModelConfig,
}

static SCHEMA: LazyLock<prost_reflect::MessageDescriptor> = LazyLock::new(|| {
    DescriptorPool::decode(oxserve_proto::FILE_DESCRIPTOR_SET)
        .expect("the protocol crate's descriptor set decodes (it is built from the same protos)")
        .get_message_by_name("inference.ModelConfig")
        .expect("the protocol crate's descriptor set has inference.ModelConfig")
});

/// Parses config.pbtxt text. Unknown fields, wrong types and bad enum
/// values fail with the parser's message, which names the line and the
/// field.
pub(crate) fn parse(text: &str) -> Result<Written, ModelConfigError> {
    let syntax = |reason: String| ModelConfigError::Syntax { reason };
    let text = colon_before_lists(text);
    let message = DynamicMessage::parse_text_format(SCHEMA.clone(), &text)
        .map_err(|e| syntax(e.to_string()))?;
    let config: ModelConfig = message.transcode_to().map_err(|e| syntax(e.to_string()))?;
    Ok(Written { config })
}

/// Parses a model configuration given as JSON (Triton's `config` parameter
/// of RepositoryModelLoad): the protobuf JSON form of ModelConfig, with
/// field names in snake_case or camelCase. Unknown fields fail, as in
/// config.pbtxt.
pub(crate) fn parse_json(text: &str) -> Result<Written, ModelConfigError> {
    let syntax = |reason: String| ModelConfigError::Syntax { reason };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let message = DynamicMessage::deserialize(SCHEMA.clone(), &mut deserializer)
        .map_err(|e| syntax(format!("config parameter: {e}")))?;
    deserializer
        .end()
        .map_err(|e| syntax(format!("config parameter: {e}")))?;
    let config: ModelConfig = message
        .transcode_to()
        .map_err(|e| syntax(format!("config parameter: {e}")))?;
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
pub(crate) fn read(model_dir: &Path) -> Result<Option<Written>, ModelConfigError> {
    let path = model_dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelConfigError::Read {
            reason: e.to_string(),
        }),
    }
}

/// What loading a model needs before its ONNX file is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadPlan {
    /// File name inside each version directory.
    pub filename: String,
    /// One device per instance to create.
    pub instances: Vec<Device>,
    /// Whether the server chose the instances (no `instance_group`, and
    /// `instances = auto`): [`LoadPlan::sessions`] may then load fewer.
    automatic: bool,
    /// ONNX Runtime graph optimisation level (Triton's scale).
    pub graph_level: i32,
    /// Threads, memory and GPU provider settings.
    pub runtime: Runtime,
    policy: ModelVersionPolicy,
}

impl LoadPlan {
    /// The plan for a model with config `written` (or none).
    pub(crate) fn new(
        written: Option<&Written>,
        defaults: &Defaults,
    ) -> Result<LoadPlan, ModelConfigError> {
        let empty = ModelConfig::default();
        let config = written.map_or(&empty, |w| &w.config);
        let filename = if config.default_model_filename.is_empty() {
            MODEL_FILE.to_string()
        } else if config.default_model_filename.contains(['/', '\\'])
            || config.default_model_filename == ".."
        {
            return Err(field_error(
                "default_model_filename",
                format!(
                    "'{}' must be a file name inside the version directory",
                    config.default_model_filename
                ),
            ));
        } else {
            config.default_model_filename.clone()
        };

        let tensorrt = accelerators(config)?;
        let mut instances = Vec::new();
        for (i, group) in config.instance_group.iter().enumerate() {
            let field = format!("instance_group[{i}]");
            if group.count < 0 {
                return Err(field_error(
                    format!("{field}.count"),
                    format!("{} is negative", group.count),
                ));
            }
            let count = usize::try_from(group.count.max(1)).unwrap_or(1);
            let kind = Kind::try_from(group.kind).map_err(|_| {
                field_error(
                    format!("{field}.kind"),
                    format!("unknown kind {}", group.kind),
                )
            })?;
            let gpu = |device_id: i32, required: bool| Device::Gpu {
                device_id,
                tensorrt,
                required,
            };
            match kind {
                Kind::Cpu => {
                    if !group.gpus.is_empty() {
                        return Err(field_error(
                            format!("{field}.gpus"),
                            "KIND_CPU instances take no GPUs",
                        ));
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
        let automatic = server_picks_instances(config, defaults);
        if instances.is_empty() {
            let count = match defaults.instances {
                InstanceCount::Auto => runtime::available_cpus().min(MAX_INSTANCES),
                InstanceCount::Fixed(n) => n.max(1),
            };
            instances = vec![Device::Cpu; count];
        }
        if instances.len() > MAX_INSTANCES {
            return Err(field_error(
                "instance_group",
                format!("{} instances is more than {MAX_INSTANCES}", instances.len()),
            ));
        }
        let graph_level = config
            .optimization
            .as_ref()
            .and_then(|o| o.graph.as_ref())
            .map_or(0, |g| g.level);
        let runtime = runtime::runtime(config, defaults)?;
        Ok(LoadPlan {
            filename,
            instances,
            automatic,
            graph_level,
            runtime,
            policy: config.version_policy.clone().unwrap_or_default(),
        })
    }

    /// The versions to load out of those found on disk (ascending).
    pub(crate) fn select_versions(&self, found: &[u64]) -> Result<Vec<u64>, ModelConfigError> {
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
                    let field = "version_policy.specific.versions";
                    let v = u64::try_from(v)
                        .map_err(|_| field_error(field, format!("{v} is negative")))?;
                    if !found.contains(&v) {
                        return Err(field_error(field, format!("version {v} has no directory")));
                    }
                    chosen.push(v);
                }
                chosen.sort_unstable();
                chosen.dedup();
                Ok(chosen)
            }
        }
    }

    /// The sessions to load for a model file of `model_bytes` bytes: the
    /// planned instances, or with automatic instances as many as keep
    /// their copies of the model within [`AUTO_INSTANCE_MEMORY`] (at least
    /// one), with automatic intra-op threads shared between those loaded.
    pub(crate) fn sessions(&self, model_bytes: u64) -> Vec<SessionOptions> {
        let mut devices = &self.instances[..];
        if self.automatic {
            let fit = AUTO_INSTANCE_MEMORY / model_bytes.max(1);
            let fit = usize::try_from(fit).unwrap_or(usize::MAX).max(1);
            devices = &devices[..fit.min(devices.len())];
        }
        let mut threads = self.runtime.threads.clone();
        if self.runtime.automatic_threads {
            threads.intra_op = runtime::share(devices.len());
        }
        devices
            .iter()
            .map(|device| SessionOptions {
                threads: threads.clone(),
                graph_level: self.graph_level,
                device: device.clone(),
                memory: self.runtime.memory.clone(),
                gpu: self.runtime.gpu.clone(),
            })
            .collect()
    }

    /// The model file of `version` under `model_dir`.
    pub(crate) fn model_path(&self, model_dir: &Path, version: u64) -> PathBuf {
        model_dir.join(version.to_string()).join(&self.filename)
    }
}

/// Whether TensorRT was asked for; every accelerator must be one oxserve
/// can provide.
fn accelerators(config: &ModelConfig) -> Result<bool, ModelConfigError> {
    let Some(accelerators) = config
        .optimization
        .as_ref()
        .and_then(|o| o.execution_accelerators.as_ref())
    else {
        return Ok(false);
    };
    if let Some(cpu) = accelerators.cpu_execution_accelerator.first() {
        return Err(field_error(
            "optimization.execution_accelerators.cpu_execution_accelerator",
            format!(
                "'{}' is not available; the onnxruntime wheel has only the default CPU provider",
                cpu.name
            ),
        ));
    }
    let mut tensorrt = false;
    for accelerator in &accelerators.gpu_execution_accelerator {
        match accelerator.name.as_str() {
            "tensorrt" => tensorrt = true,
            "cuda" => {}
            other => {
                return Err(field_error(
                    "optimization.execution_accelerators.gpu_execution_accelerator",
                    format!("unknown accelerator '{other}' (use \"tensorrt\" or \"cuda\")"),
                ));
            }
        }
    }
    Ok(tensorrt)
}

#[cfg(test)]
mod tests;
