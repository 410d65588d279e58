//! One ONNX Runtime session: load, describe, warm up, run.

use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use std::time::Instant;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynTensor, ValueType};

use super::providers::{self, Device};
use super::types::datatype_of;
use super::{BackendError, batch};
use crate::scheduler::{ComputeTimes, ExecError, Executed, Executor};
use crate::tensor::{DecodedRequest, ModelSpec, Tensor, TensorSpec};

/// Where a model's ONNX graph comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file in the model repository.
    File(PathBuf),
    /// Bytes uploaded with a load request, named for messages.
    Memory {
        /// How to name it in messages (`<model>/<version>/model.onnx`).
        name: String,
        /// The ONNX file's bytes.
        bytes: Bytes,
    },
}

impl ModelSource {
    /// How the source is named in messages.
    pub fn name(&self) -> String {
        match self {
            ModelSource::File(path) => path.display().to_string(),
            ModelSource::Memory { name, .. } => format!("{name} (uploaded)"),
        }
    }
}

/// How sessions are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads ONNX Runtime uses inside one operator; 0 lets it choose.
    pub intra_op_threads: usize,
    /// Graph optimisation, Triton's scale: -1 none, 1 basic, 2 extended,
    /// 0 or 3+ all.
    pub graph_level: i32,
    /// CPU or GPU.
    pub device: Device,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            intra_op_threads: 1,
            graph_level: 0,
            device: Device::Cpu,
        }
    }
}

/// A loaded model instance: one session, driven by one thread at a time.
pub struct Instance {
    /// Dropped by hand in `Drop`, so that memory can be trimmed after it.
    session: ManuallyDrop<Session>,
    spec: Arc<ModelSpec>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: the session is dropped exactly once, here, and never used
        // again: `self` is being dropped.
        unsafe { ManuallyDrop::drop(&mut self.session) };
        // The session freed its arenas; hand the pages back, or over many
        // reloads glibc would keep them and resident memory would creep.
        release_freed_memory();
    }
}

/// Returns free heap pages to the operating system (glibc's
/// `malloc_trim`); elsewhere nothing.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it
    // has no preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("spec", &self.spec)
            .finish()
    }
}

#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "every value type but a tensor (sequence, map, optional, future ones) is unsupported"
)]
fn describe(
    source: &str,
    what: &'static str,
    outlets: &[ort::value::Outlet],
) -> Result<Vec<TensorSpec>, BackendError> {
    outlets
        .iter()
        .map(|outlet| {
            let unsupported = |ty: String| BackendError::Unsupported {
                source_name: source.to_string(),
                what,
                tensor: outlet.name().to_string(),
                ty,
            };
            match outlet.dtype() {
                ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                    name: outlet.name().to_string(),
                    datatype: datatype_of(*ty).ok_or_else(|| unsupported(format!("{ty:?}")))?,
                    dims: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
                }),
                other => Err(unsupported(format!("{other:?}"))),
            }
        })
        .collect()
}

impl Instance {
    /// Loads `source` as model `name`. Returns the instance and the device
    /// it actually runs on (a GPU request may fall back to CPU).
    pub fn load(
        env: &Environment,
        name: &str,
        source: &ModelSource,
        options: &SessionOptions,
    ) -> Result<(Instance, Device), BackendError> {
        let source_name = source.name();
        let load_error = |reason: String| BackendError::Load {
            source_name: source_name.clone(),
            reason,
        };
        let build = |gpu: Option<(i32, bool)>| -> Result<Session, String> {
            let level = match options.graph_level {
                i32::MIN..=-1 => GraphOptimizationLevel::Disable,
                1 => GraphOptimizationLevel::Level1,
                2 => GraphOptimizationLevel::Level2,
                _ => GraphOptimizationLevel::Level3,
            };
            let mut builder = Session::builder(env)
                .map_err(|e| e.to_string())?
                .with_optimization_level(level)
                .map_err(|e| e.to_string())?;
            if let Some((device_id, tensorrt)) = gpu {
                builder = providers::register_gpu(builder, device_id, tensorrt)?;
            }
            if options.intra_op_threads > 0 {
                builder = builder
                    .with_intra_threads(options.intra_op_threads)
                    .map_err(|e| e.to_string())?;
            }
            match source {
                ModelSource::File(path) => builder.commit_from_file(path),
                ModelSource::Memory { bytes, .. } => builder.commit_from_memory(bytes),
            }
            .map_err(|e| e.to_string())
        };
        let (session, device) = match options.device {
            Device::Cpu => (build(None).map_err(load_error)?, Device::Cpu),
            Device::Gpu {
                device_id,
                tensorrt,
                required,
            } => {
                let attempt = match providers::gpu_unavailable_reason() {
                    None => build(Some((device_id, tensorrt)))
                        .map_err(|e| format!("GPU {device_id} cannot be used: {e}")),
                    Some(reason) => Err(reason),
                };
                match attempt {
                    Ok(session) => (session, options.device.clone()),
                    Err(reason) if required => {
                        return Err(load_error(format!(
                            "instance kind KIND_GPU asks for a GPU, but {reason}"
                        )));
                    }
                    Err(reason) => {
                        tracing::warn!(model = name, "no GPU ({reason}); running on CPU instead");
                        (build(None).map_err(load_error)?, Device::Cpu)
                    }
                }
            }
        };
        let spec = ModelSpec {
            name: name.to_string(),
            inputs: describe(&source_name, "input", session.inputs())?,
            outputs: describe(&source_name, "output", session.outputs())?,
            // What the ONNX file says; the model's configuration decides.
            max_batch_size: 0,
        };
        Ok((
            Instance {
                session: ManuallyDrop::new(session),
                spec: Arc::new(spec),
            },
            device,
        ))
    }

    /// What the model takes and returns.
    pub fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    /// Runs the model once on zeros (empty strings for BYTES), with every
    /// variable dimension set to 1, so that the first real request does not
    /// pay for ONNX Runtime's lazy initialisation.
    pub fn warm_up(&mut self) -> Result<(), BackendError> {
        let inputs: Vec<Tensor> = self
            .spec
            .inputs
            .iter()
            .map(|t| {
                let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(1) as usize).collect();
                let count: usize = shape.iter().product();
                // Zero bytes are zeros of every fixed-size type, and for
                // BYTES, four zero bytes are one empty element.
                let data = Bytes::from(vec![0u8; count * t.datatype.element_size().unwrap_or(4)]);
                Tensor {
                    name: t.name.clone(),
                    datatype: t.datatype,
                    shape,
                    data,
                }
            })
            .collect();
        let request = DecodedRequest {
            inputs,
            outputs: (0..self.spec.outputs.len()).collect(),
            batch_size: None,
        };
        self.run_batch(&[&request]).map(|_| ())
    }

    /// Runs validated requests as one execution: their inputs concatenated
    /// along dimension 0 (a single request is taken as is), the outputs
    /// split back by each request's rows. Returns each request's outputs,
    /// in the order it asked for them, and the time each stage took.
    pub fn run_batch(
        &mut self,
        requests: &[&DecodedRequest],
    ) -> Result<Executed<Vec<Tensor>>, BackendError> {
        let run_error = |e: ort::Error| BackendError::Run(e.to_string());
        let started = Instant::now();
        let spec = Arc::clone(&self.spec);
        let mut values: Vec<(&str, DynTensor)> = Vec::with_capacity(spec.inputs.len());
        for (index, input) in spec.inputs.iter().enumerate() {
            let parts: Vec<&Tensor> = requests.iter().map(|r| &r.inputs[index]).collect();
            values.push((
                input.name.as_str(),
                batch::concat(&parts).map_err(run_error)?,
            ));
        }
        let prepared = Instant::now();
        let results = self.session.run(values).map_err(run_error)?;
        let ran = Instant::now();

        let total_rows: usize = requests.iter().map(|r| r.batch_size.unwrap_or(1)).sum();
        let mut read: Vec<Option<batch::Output<'_>>> = Vec::with_capacity(spec.outputs.len());
        for (index, output) in spec.outputs.iter().enumerate() {
            if !requests.iter().any(|r| r.outputs.contains(&index)) {
                read.push(None);
                continue;
            }
            let value = results.get(&output.name).ok_or_else(|| {
                BackendError::Run(format!("ONNX Runtime returned no output '{}'", output.name))
            })?;
            let out = batch::Output::read(&output.name, value)?;
            if requests.len() > 1 && out.rows() != total_rows {
                return Err(BackendError::Run(format!(
                    "output '{}' has {} rows for a batch of {total_rows}; the model does not keep dimension 0 as the batch",
                    output.name,
                    out.rows()
                )));
            }
            read.push(Some(out));
        }
        let mut outputs = Vec::with_capacity(requests.len());
        let mut start = 0;
        for request in requests {
            let rows = request.batch_size.unwrap_or(1);
            let tensors = request
                .outputs
                .iter()
                .map(|&index| {
                    let name = &spec.outputs[index].name;
                    let out = read[index]
                        .as_ref()
                        .expect("every requested output was read above");
                    if requests.len() == 1 {
                        out.whole(name)
                    } else {
                        out.slice(name, start, rows)
                    }
                })
                .collect();
            outputs.push(tensors);
            start += rows;
        }
        let done = Instant::now();
        Ok(Executed {
            outputs,
            times: ComputeTimes {
                input: prepared - started,
                infer: ran - prepared,
                output: done - ran,
            },
        })
    }
}

impl Executor for Instance {
    type Job = DecodedRequest;
    type Output = Vec<Tensor>;

    fn execute(&mut self, jobs: &[&DecodedRequest]) -> Result<Executed<Vec<Tensor>>, ExecError> {
        self.run_batch(jobs).map_err(|e| ExecError(e.to_string()))
    }
}
