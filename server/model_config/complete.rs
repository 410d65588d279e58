//! Completing a written configuration from the loaded ONNX model and the
//! server's defaults, checking every written field against the model.

use std::time::Duration;

use oxserve_proto::inference::model_config::SchedulingChoice;
use oxserve_proto::inference::model_instance_group::Kind;
use oxserve_proto::inference::model_queue_policy::TimeoutAction;
use oxserve_proto::inference::model_version_policy::{self, PolicyChoice};
use oxserve_proto::inference::{
    ModelConfig, ModelDynamicBatching, ModelInput, ModelInstanceGroup, ModelOutput,
    ModelQueuePolicy, ModelVersionPolicy,
};

use super::{
    AUTO_BATCH_CAP, BatchSize, Defaults, MODEL_FILE, ModelConfigError, PLATFORM, Written,
    field_error, server_picks_instances,
};
use crate::backend::Device;
use crate::scheduler::BatchPolicy;
use crate::scheduler::{AutoBatchSettings, SchedulerSettings};
use crate::tensor::{ModelSpec, TensorSpec};

/// The backend name Triton gives ONNX Runtime.
const BACKEND: &str = "onnxruntime";

/// Everything the server needs to serve one model version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    /// The completed configuration, as ModelConfig returns it.
    pub config: ModelConfig,
    /// Inputs and outputs to validate requests against (full shapes, with
    /// the batch dimension as -1 when batching).
    pub spec: ModelSpec,
    /// How requests are merged and queued.
    pub scheduling: SchedulerSettings,
    /// Timeouts per priority level, and the level of requests that name
    /// none.
    pub queues: QueuePolicies,
    /// Whether answers are kept in the response cache.
    pub response_cache: bool,
}

/// The queue policy of one priority level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LevelPolicy {
    /// Timeout for requests that set none.
    pub default_timeout: Option<Duration>,
    /// Whether a request's `timeout` parameter may shorten the default.
    pub allow_timeout_override: bool,
    /// Triton's DELAY: a request whose timeout passed is kept, behind the
    /// others, instead of rejected.
    pub delay: bool,
}

/// The queue policies of a model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueuePolicies {
    /// Per level, highest first (index 0 is Triton's level 1).
    pub levels: Vec<LevelPolicy>,
    /// The level (0-based) of requests that give no `priority`.
    pub default_level: usize,
}

/// Completes `written` (or an empty config) for a model whose ONNX file
/// declares `onnx`, running on `devices` (one per instance, after any GPU
/// fall-back).
pub(crate) fn complete(
    name: &str,
    written: Option<&Written>,
    onnx: &ModelSpec,
    devices: &[Device],
    defaults: &Defaults,
) -> Result<Resolved, ModelConfigError> {
    let mut config = written.map(|w| w.config.clone()).unwrap_or_default();
    if !config.name.is_empty() && config.name != name {
        return Err(field_error(
            "name",
            format!(
                "'{}' differs from the model's directory '{name}'",
                config.name
            ),
        ));
    }
    config.name = name.to_string();
    if !config.platform.is_empty() && config.platform != PLATFORM {
        return Err(field_error(
            "platform",
            format!(
                "'{}' is not served; oxserve serves '{PLATFORM}'",
                config.platform
            ),
        ));
    }
    config.platform = PLATFORM.to_string();
    if !config.backend.is_empty() && config.backend != BACKEND {
        return Err(field_error(
            "backend",
            format!(
                "'{}' is not served; oxserve serves '{BACKEND}'",
                config.backend
            ),
        ));
    }
    config.backend = BACKEND.to_string();

    let can_batch = onnx.has_batch_dim();
    // The server picks the batch size unless the configuration (or the
    // server's max_batch_size setting) names one.
    let auto =
        config.max_batch_size.is_none() && can_batch && defaults.max_batch_size == BatchSize::Auto;
    let max_batch_size = if let Some(written) = config.max_batch_size {
        let value = usize::try_from(written)
            .map_err(|_| field_error("max_batch_size", format!("{written} is negative")))?;
        if value > 0 && !can_batch {
            return Err(field_error(
                "max_batch_size",
                format!(
                    "{value} needs a variable first dimension on every input and output, which this model does not have"
                ),
            ));
        }
        value
    } else if can_batch {
        match defaults.max_batch_size {
            BatchSize::Auto => AUTO_BATCH_CAP,
            BatchSize::Fixed(n) => n,
        }
    } else {
        0
    };
    config.max_batch_size =
        Some(i32::try_from(max_batch_size).map_err(|_| {
            field_error("max_batch_size", format!("{max_batch_size} is too large"))
        })?);
    let batching = max_batch_size > 0;

    let inputs = merge(
        "input",
        &config
            .input
            .iter()
            .map(|i| (i.name.as_str(), i.data_type, &i.dims[..]))
            .collect::<Vec<_>>(),
        &onnx.inputs,
        batching,
    )?;
    let outputs = merge(
        "output",
        &config
            .output
            .iter()
            .map(|o| (o.name.as_str(), o.data_type, &o.dims[..]))
            .collect::<Vec<_>>(),
        &onnx.outputs,
        batching,
    )?;
    let formats: Vec<i32> = onnx
        .inputs
        .iter()
        .map(|t| {
            config
                .input
                .iter()
                .find(|i| i.name == t.name)
                .map_or(0, |i| i.format)
        })
        .collect();
    config.input = inputs
        .iter()
        .zip(formats)
        .map(|(t, format)| ModelInput {
            name: t.name.clone(),
            data_type: t.datatype.config_type() as i32,
            format,
            dims: config_dims(t, batching),
        })
        .collect();
    config.output = outputs
        .iter()
        .map(|t| ModelOutput {
            name: t.name.clone(),
            data_type: t.datatype.config_type() as i32,
            dims: config_dims(t, batching),
        })
        .collect();

    let written_batching = config
        .scheduling_choice
        .as_ref()
        .map(|SchedulingChoice::DynamicBatching(db)| db.clone());
    if written_batching.is_some() && !batching {
        return Err(field_error("dynamic_batching", "needs max_batch_size > 0"));
    }
    let db = written_batching.clone().unwrap_or_default();
    let policy = if !batching {
        BatchPolicy::unbatched()
    } else if written_batching.is_some() {
        let mut preferred = Vec::new();
        for &size in &db.preferred_batch_size {
            match usize::try_from(size) {
                Ok(s) if (1..=max_batch_size).contains(&s) => preferred.push(s),
                _ => {
                    return Err(field_error(
                        "dynamic_batching.preferred_batch_size",
                        format!("{size} is outside 1..={max_batch_size}"),
                    ));
                }
            }
        }
        BatchPolicy {
            max_batch_size,
            preferred_batch_sizes: preferred,
            max_queue_delay: Duration::from_micros(db.max_queue_delay_microseconds),
        }
    } else {
        BatchPolicy {
            max_batch_size,
            preferred_batch_sizes: defaults
                .preferred_batch_sizes
                .iter()
                .copied()
                .filter(|&s| s <= max_batch_size)
                .collect(),
            max_queue_delay: defaults.max_queue_delay,
        }
    };
    let (queues, capacities, queue_config) = queue_policies(&db, defaults)?;
    if batching {
        config.scheduling_choice = Some(SchedulingChoice::DynamicBatching(ModelDynamicBatching {
            preferred_batch_size: policy
                .preferred_batch_sizes
                .iter()
                .map(|&s| s as i32)
                .collect(),
            max_queue_delay_microseconds: u64::try_from(policy.max_queue_delay.as_micros())
                .unwrap_or(u64::MAX),
            preserve_ordering: db.preserve_ordering,
            ..queue_config
        }));
    }
    let scheduling = SchedulerSettings {
        policy,
        capacities,
        auto: auto.then_some(AutoBatchSettings {
            cap: AUTO_BATCH_CAP,
            latency_budget: defaults.batch_latency_budget,
        }),
        inline_below: Some(defaults.inline_threshold).filter(|t| !t.is_zero()),
        // Instances the server chose take work as the load needs them;
        // instances the configuration names all take work, as in Triton.
        adaptive_instances: server_picks_instances(&config, defaults),
    };
    let response_cache = config.response_cache.as_ref().is_some_and(|c| c.enable);

    config.instance_group = instance_groups(name, devices);
    if config.version_policy.is_none() {
        // Triton's default, stated so clients see what is in force.
        config.version_policy = Some(ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::Latest(model_version_policy::Latest {
                num_versions: 1,
            })),
        });
    }
    if config.default_model_filename.is_empty() {
        config.default_model_filename = MODEL_FILE.to_string();
    }

    let spec = ModelSpec {
        name: name.to_string(),
        inputs,
        outputs,
        max_batch_size,
        max_request_rows: if defaults.split_large_requests {
            usize::MAX
        } else {
            max_batch_size
        },
        // `merge` keeps the ONNX model's input order.
        utf8_inputs: onnx.utf8_inputs.clone(),
    };
    Ok(Resolved {
        config,
        spec,
        scheduling,
        queues,
        response_cache,
    })
}

/// The queue policies of every priority level, their capacities, and the
/// completed dynamic_batching fields that describe them.
fn queue_policies(
    db: &ModelDynamicBatching,
    defaults: &Defaults,
) -> Result<(QueuePolicies, Vec<usize>, ModelDynamicBatching), ModelConfigError> {
    let levels = usize::try_from(db.priority_levels.max(1)).unwrap_or(usize::MAX);
    if levels > 64 {
        return Err(field_error(
            "dynamic_batching.priority_levels",
            format!("{levels} is more than 64"),
        ));
    }
    let default_level = match db.default_priority_level {
        0 => levels,
        n if (1..=levels as u64).contains(&n) => n as usize,
        n => {
            return Err(field_error(
                "dynamic_batching.default_priority_level",
                format!("{n} is outside 1..={levels} (priority_levels)"),
            ));
        }
    };
    if let Some(&level) = db
        .priority_queue_policy
        .keys()
        .find(|&&l| l == 0 || l > levels as u64)
    {
        return Err(field_error(
            format!("dynamic_batching.priority_queue_policy[{level}]"),
            format!("level {level} is outside 1..={levels} (priority_levels)"),
        ));
    }
    let base = db.default_queue_policy.unwrap_or_default();
    let mut policies = Vec::with_capacity(levels);
    let mut capacities = Vec::with_capacity(levels);
    let mut completed = std::collections::HashMap::new();
    for level in 1..=levels as u64 {
        let written = db.priority_queue_policy.get(&level).copied();
        let queue = written.unwrap_or(base);
        let field = match written {
            Some(_) => format!("dynamic_batching.priority_queue_policy[{level}].timeout_action"),
            None => "dynamic_batching.default_queue_policy.timeout_action".to_string(),
        };
        let delay = match TimeoutAction::try_from(queue.timeout_action) {
            Ok(TimeoutAction::Reject) => false,
            Ok(TimeoutAction::Delay) => true,
            Err(_) => {
                return Err(field_error(
                    field,
                    format!("{} is not REJECT or DELAY", queue.timeout_action),
                ));
            }
        };
        let capacity = match queue.max_queue_size {
            0 => defaults.max_queue_size,
            n => n as usize,
        };
        capacities.push(capacity);
        policies.push(LevelPolicy {
            default_timeout: (queue.default_timeout_microseconds > 0)
                .then(|| Duration::from_micros(queue.default_timeout_microseconds)),
            allow_timeout_override: queue.allow_timeout_override,
            delay,
        });
        if written.is_some() {
            completed.insert(
                level,
                ModelQueuePolicy {
                    max_queue_size: u32::try_from(capacity).unwrap_or(u32::MAX),
                    ..queue
                },
            );
        }
    }
    let default_policy = ModelQueuePolicy {
        max_queue_size: u32::try_from(match base.max_queue_size {
            0 => defaults.max_queue_size,
            n => n as usize,
        })
        .unwrap_or(u32::MAX),
        ..base
    };
    let described = ModelDynamicBatching {
        priority_levels: if levels > 1 { levels as u64 } else { 0 },
        default_priority_level: if levels > 1 { default_level as u64 } else { 0 },
        default_queue_policy: Some(default_policy),
        priority_queue_policy: completed,
        ..ModelDynamicBatching::default()
    };
    Ok((
        QueuePolicies {
            levels: policies,
            default_level: default_level - 1,
        },
        capacities,
        described,
    ))
}

/// Dims as the config states them: without the batch dimension when
/// batching.
fn config_dims(t: &TensorSpec, batching: bool) -> Vec<i64> {
    if batching {
        t.dims[1..].to_vec()
    } else {
        t.dims.clone()
    }
}

/// Checks the written tensors against the model's and fills in the rest.
/// A written dimension may fix a variable one of the model; a fixed one must
/// match. Returns full shapes (batch dimension -1 when batching).
fn merge(
    what: &str,
    written: &[(&str, i32, &[i64])],
    onnx: &[TensorSpec],
    batching: bool,
) -> Result<Vec<TensorSpec>, ModelConfigError> {
    for (name, _, _) in written {
        if !onnx.iter().any(|t| t.name == *name) {
            let names: Vec<String> = onnx.iter().map(|t| format!("'{}'", t.name)).collect();
            return Err(field_error(
                format!("{what} '{name}'"),
                format!(
                    "the ONNX model has no such {what}; it has {}",
                    names.join(", ")
                ),
            ));
        }
    }
    onnx.iter()
        .map(|t| {
            let Some(&(_, data_type, dims)) = written.iter().find(|(n, _, _)| *n == t.name) else {
                return Ok(t.clone());
            };
            let expected = t.datatype.config_type() as i32;
            if data_type != expected {
                let got = oxserve_proto::inference::DataType::try_from(data_type)
                    .map_or_else(|_| data_type.to_string(), |d| d.as_str_name().to_string());
                return Err(field_error(
                    format!("{what} '{}'.data_type", t.name),
                    format!(
                        "{got}, but the ONNX model has {}",
                        t.datatype.config_type().as_str_name()
                    ),
                ));
            }
            let model_dims = if batching { &t.dims[1..] } else { &t.dims[..] };
            let mismatch = || {
                field_error(
                    format!("{what} '{}'.dims", t.name),
                    format!(
                        "{dims:?} do not fit the ONNX model's {model_dims:?}{}",
                        if batching {
                            " (without the batch dimension, as max_batch_size > 0)"
                        } else {
                            ""
                        }
                    ),
                )
            };
            if dims.len() != model_dims.len() {
                return Err(mismatch());
            }
            let mut merged = Vec::with_capacity(t.dims.len());
            if batching {
                merged.push(-1);
            }
            for (&w, &m) in dims.iter().zip(model_dims) {
                merged.push(match (w, m) {
                    (w, m) if m < 0 && w > 0 => w,
                    (w, m) if w < 0 || w == m => m,
                    _ => return Err(mismatch()),
                });
            }
            Ok(TensorSpec {
                name: t.name.clone(),
                datatype: t.datatype,
                dims: merged,
            })
        })
        .collect()
}

/// Instance groups as they run: one per device kind, with counts.
fn instance_groups(name: &str, devices: &[Device]) -> Vec<ModelInstanceGroup> {
    let cpus = devices.iter().filter(|d| **d == Device::Cpu).count();
    let mut groups = Vec::new();
    if cpus > 0 {
        groups.push(ModelInstanceGroup {
            name: format!("{name}_cpu"),
            count: cpus as i32,
            gpus: Vec::new(),
            kind: Kind::Cpu as i32,
        });
    }
    let mut gpu_ids: Vec<i32> = devices
        .iter()
        .filter_map(|d| match d {
            Device::Gpu { device_id, .. } => Some(*device_id),
            Device::Cpu => None,
        })
        .collect();
    if !gpu_ids.is_empty() {
        let count = gpu_ids.len();
        gpu_ids.sort_unstable();
        gpu_ids.dedup();
        groups.push(ModelInstanceGroup {
            name: format!("{name}_gpu"),
            count: (count / gpu_ids.len()) as i32,
            gpus: gpu_ids,
            kind: Kind::Gpu as i32,
        });
    }
    groups
}
