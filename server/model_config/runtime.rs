//! ONNX Runtime settings of a model: its config.pbtxt `parameters` and
//! TensorRT accelerator parameters, with the names Triton's ONNX Runtime
//! backend reads, over the server's defaults.

use std::collections::HashMap;

use oxserve_proto::inference::{ModelConfig, ModelParameter};

use super::{Defaults, ModelConfigError, field_error};
use crate::backend::{GpuOptions, Memory, Threads};

/// Model `parameters` oxserve applies; any other fails the load.
const KNOWN: &[&str] = &[
    "intra_op_thread_count",
    "inter_op_thread_count",
    "execution_mode",
    "enable_mem_arena",
    "enable_mem_pattern",
    "memory.enable_memory_arena_shrinkage",
    "session.intra_op.allow_spinning",
    "gpu_mem_limit",
    "arena_extend_strategy",
];

/// TensorRT accelerator parameters oxserve applies.
const TENSORRT: &[&str] = &[
    "precision_mode",
    "trt_engine_cache_enable",
    "trt_engine_cache_path",
    "max_workspace_size_bytes",
];

/// The ONNX Runtime settings of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Runtime {
    /// Intra-op threads 0 until the instances to load are known, when
    /// `automatic_threads`.
    pub(crate) threads: Threads,
    /// Whether each instance gets its share of the CPUs as intra-op
    /// threads (asked for as 0, by the model or the server's default).
    pub(crate) automatic_threads: bool,
    pub(crate) memory: Memory,
    pub(crate) gpu: GpuOptions,
}

/// The CPUs this process may use: the cgroup CPU quota and the affinity
/// mask, as the standard library reads them, not the host's core count.
pub(super) fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Intra-op threads for one of `instances` instances when 0 (automatic)
/// is asked for: its share of the available CPUs, at least one.
pub(super) fn share(instances: usize) -> usize {
    (available_cpus() / instances.max(1)).max(1)
}

/// Reads `config`'s parameters over `defaults`.
pub(crate) fn runtime(
    config: &ModelConfig,
    defaults: &Defaults,
) -> Result<Runtime, ModelConfigError> {
    let parameters = &config.parameters;
    if let Some(unknown) = parameters.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(field_error(
            format!("parameters['{unknown}']"),
            format!(
                "not an ONNX Runtime setting oxserve applies; use one of {}",
                KNOWN.join(", ")
            ),
        ));
    }
    let get = |key: &str| {
        parameters
            .get(key)
            .map(|p: &ModelParameter| p.string_value.trim())
    };
    // 0 (here as in Triton: "the runtime's choice") is this process's
    // share of the CPUs, never ONNX Runtime's count of the host's.
    let intra_op =
        number(parameters, "intra_op_thread_count")?.unwrap_or(defaults.intra_op_threads);
    let threads = Threads {
        intra_op,
        inter_op: number(parameters, "inter_op_thread_count")?.unwrap_or(0),
        parallel: match get("execution_mode") {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(field_error(
                    "parameters['execution_mode']",
                    format!("'{other}': use \"0\" (sequential) or \"1\" (parallel)"),
                ));
            }
        },
        spinning: flag(parameters, "session.intra_op.allow_spinning")?.unwrap_or(defaults.spinning),
    };
    let memory = Memory {
        arena: flag(parameters, "enable_mem_arena")?.unwrap_or(true),
        pattern: flag(parameters, "enable_mem_pattern")?.unwrap_or(true),
        shrink_after_run: match get("memory.enable_memory_arena_shrinkage") {
            None => defaults.shrink_arena,
            // ONNX Runtime's own format ("cpu:0;gpu:0") or a plain flag.
            Some(v) if v.contains(':') => true,
            Some(_) => flag(parameters, "memory.enable_memory_arena_shrinkage")?.unwrap_or(true),
        },
    };
    if threads.intra_op > 1024 || threads.inter_op > 1024 {
        return Err(field_error("parameters", "thread counts above 1024"));
    }
    let mut gpu = GpuOptions {
        mem_limit: number(parameters, "gpu_mem_limit")?,
        arena_same_as_requested: match get("arena_extend_strategy") {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(field_error(
                    "parameters['arena_extend_strategy']",
                    format!(
                        "'{other}': use \"0\" (next power of two) or \"1\" (same as requested)"
                    ),
                ));
            }
        },
        ..GpuOptions::default()
    };
    let accelerators = config
        .optimization
        .as_ref()
        .and_then(|o| o.execution_accelerators.as_ref())
        .map_or(&[][..], |a| &a.gpu_execution_accelerator[..]);
    for (i, accelerator) in accelerators.iter().enumerate() {
        let field = |key: &str| {
            format!(
                "optimization.execution_accelerators.gpu_execution_accelerator[{i}].parameters['{key}']"
            )
        };
        let known: &[&str] = if accelerator.name == "tensorrt" {
            TENSORRT
        } else {
            &[]
        };
        if let Some(unknown) = accelerator
            .parameters
            .keys()
            .find(|k| !known.contains(&k.as_str()))
        {
            return Err(field_error(
                field(unknown),
                format!(
                    "not a '{}' setting oxserve applies{}",
                    accelerator.name,
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!("; use one of {}", known.join(", "))
                    }
                ),
            ));
        }
        for (key, value) in &accelerator.parameters {
            let value = value.trim();
            match key.as_str() {
                "precision_mode" => {
                    gpu.tensorrt_fp16 = match value {
                        "FP16" => true,
                        "FP32" => false,
                        other => {
                            return Err(field_error(
                                field(key),
                                format!("'{other}': use \"FP32\" or \"FP16\""),
                            ));
                        }
                    }
                }
                "trt_engine_cache_enable" => {
                    gpu.tensorrt_engine_cache = parse_flag(value).ok_or_else(|| {
                        field_error(field(key), format!("'{value}' is not 0/1/true/false"))
                    })?;
                }
                "trt_engine_cache_path" => gpu.tensorrt_engine_cache_path = Some(value.to_string()),
                "max_workspace_size_bytes" => {
                    gpu.tensorrt_max_workspace = Some(value.parse().map_err(|_| {
                        field_error(field(key), format!("'{value}' is not a number of bytes"))
                    })?);
                }
                _ => {}
            }
        }
    }
    Ok(Runtime {
        automatic_threads: intra_op == 0,
        threads,
        memory,
        gpu,
    })
}

fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "1" | "true" | "True" | "TRUE" => Some(true),
        "0" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn flag(
    parameters: &HashMap<String, ModelParameter>,
    key: &str,
) -> Result<Option<bool>, ModelConfigError> {
    parameters
        .get(key)
        .map(|p| {
            let value = p.string_value.trim();
            parse_flag(value).ok_or_else(|| {
                field_error(
                    format!("parameters['{key}']"),
                    format!("'{value}': use \"1\" or \"0\""),
                )
            })
        })
        .transpose()
}

fn number(
    parameters: &HashMap<String, ModelParameter>,
    key: &str,
) -> Result<Option<usize>, ModelConfigError> {
    parameters
        .get(key)
        .map(|p| {
            let value = p.string_value.trim();
            value.parse::<usize>().map_err(|_| {
                field_error(
                    format!("parameters['{key}']"),
                    format!("'{value}' is not a non-negative number"),
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::parse;

    fn defaults() -> Defaults {
        Defaults {
            max_batch_size: crate::model_config::BatchSize::Fixed(8),
            batch_latency_budget: std::time::Duration::from_millis(100),
            split_large_requests: true,
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: std::time::Duration::ZERO,
            inline_threshold: std::time::Duration::ZERO,
            max_queue_size: 16,
            instances: crate::model_config::InstanceCount::Fixed(1),
            intra_op_threads: 3,
            spinning: false,
            shrink_arena: true,
        }
    }

    #[test]
    fn triton_parameters_set_the_session() {
        let c = parse(
            r#"
            parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
            parameters { key: "inter_op_thread_count" value: { string_value: "4" } }
            parameters { key: "execution_mode" value: { string_value: "1" } }
            parameters { key: "enable_mem_arena" value: { string_value: "0" } }
            parameters { key: "memory.enable_memory_arena_shrinkage" value: { string_value: "cpu:0" } }
            parameters { key: "gpu_mem_limit" value: { string_value: "4294967296" } }
            optimization { execution_accelerators { gpu_execution_accelerator [ {
                name: "tensorrt"
                parameters { key: "precision_mode" value: "FP16" }
                parameters { key: "trt_engine_cache_enable" value: "1" }
                parameters { key: "trt_engine_cache_path" value: "/cache" }
            } ] } }
            "#,
        )
        .unwrap();
        let r = runtime(&c.config, &defaults()).unwrap();
        assert_eq!(r.threads.intra_op, 2);
        assert_eq!(r.threads.inter_op, 4);
        assert!(r.threads.parallel);
        assert!(!r.memory.arena);
        assert!(r.memory.shrink_after_run);
        assert_eq!(r.gpu.mem_limit, Some(4_294_967_296));
        assert!(r.gpu.tensorrt_fp16 && r.gpu.tensorrt_engine_cache);
        assert_eq!(r.gpu.tensorrt_engine_cache_path.as_deref(), Some("/cache"));
    }

    #[test]
    fn defaults_come_from_the_server() {
        let r = runtime(&ModelConfig::default(), &defaults()).unwrap();
        assert_eq!(r.threads.intra_op, 3);
        assert!(!r.threads.parallel && !r.threads.spinning);
        assert!(r.memory.arena && r.memory.pattern && r.memory.shrink_after_run);
    }

    #[test]
    fn zero_threads_are_automatic_from_the_server_or_the_model() {
        let r = runtime(&ModelConfig::default(), &defaults()).unwrap();
        assert!(!r.automatic_threads);
        let auto = Defaults {
            intra_op_threads: 0,
            ..defaults()
        };
        assert!(
            runtime(&ModelConfig::default(), &auto)
                .unwrap()
                .automatic_threads
        );
        // Triton's "0" means the same, not the host's core count.
        let c =
            parse(r#"parameters { key: "intra_op_thread_count" value: { string_value: "0" } }"#)
                .unwrap();
        assert!(runtime(&c.config, &defaults()).unwrap().automatic_threads);
    }

    #[test]
    fn unknown_or_bad_parameters_name_themselves() {
        for (text, needle) in [
            (
                r#"parameters { key: "colour" value: { string_value: "1" } }"#,
                "parameters['colour']",
            ),
            (
                r#"parameters { key: "execution_mode" value: { string_value: "2" } }"#,
                "execution_mode",
            ),
            (
                r#"parameters { key: "intra_op_thread_count" value: { string_value: "-1" } }"#,
                "intra_op_thread_count",
            ),
            (
                r#"parameters { key: "enable_mem_arena" value: { string_value: "maybe" } }"#,
                "enable_mem_arena",
            ),
            (
                r#"optimization { execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt" parameters { key: "precision_mode" value: "INT4" } } ] } }"#,
                "precision_mode",
            ),
            (
                r#"optimization { execution_accelerators { gpu_execution_accelerator [ { name: "cuda" parameters { key: "x" value: "1" } } ] } }"#,
                "parameters['x']",
            ),
        ] {
            let c = parse(text).unwrap();
            let e = runtime(&c.config, &defaults()).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
