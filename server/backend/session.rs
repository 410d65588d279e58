//! One ONNX Runtime session: load, describe, warm up, run.

use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use std::time::Instant;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::value::{DynTensor, ValueType};

use super::arena::Arena;
use super::options::SessionOptions;
use super::providers::{self, Device};
use super::types::datatype_of;
use super::{BackendError, batch, text};
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
    /// The model's size in bytes (0 for a file that cannot be read; the
    /// load then reports the file).
    pub fn size(&self) -> u64 {
        match self {
            ModelSource::File(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
            ModelSource::Memory { bytes, .. } => bytes.len() as u64,
        }
    }

    /// How the source is named in messages.
    pub fn name(&self) -> String {
        match self {
            ModelSource::File(path) => path.display().to_string(),
            ModelSource::Memory { name, .. } => format!("{name} (uploaded)"),
        }
    }
}

/// A loaded model instance: one session, driven by one thread at a time.
pub struct Instance {
    /// Dropped by hand in `Drop`, so that memory can be trimmed after it.
    session: ManuallyDrop<Session>,
    spec: Arc<ModelSpec>,
    /// Options of a run that shrinks the arena afterwards, if the arena
    /// is to be shrunk.
    shrink: Option<RunOptions>,
    /// When the arena next shrinks.
    arena: Arena,
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
            let threads = &options.threads;
            let memory = &options.memory;
            let e = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
            let mut builder = Session::builder(env)
                .map_err(|e| e.to_string())?
                .with_optimization_level(level)
                .map_err(e)?
                .with_parallel_execution(threads.parallel)
                .map_err(e)?
                .with_intra_op_spinning(threads.spinning)
                .map_err(e)?
                .with_inter_op_spinning(threads.spinning)
                .map_err(e)?
                .with_memory_pattern(memory.pattern)
                .map_err(e)?;
            match gpu {
                Some((device_id, tensorrt)) => {
                    builder = providers::register_gpu(builder, device_id, tensorrt, &options.gpu)?;
                }
                None => {
                    builder = builder
                        .with_execution_providers([ort::ep::CPU::default()
                            .with_arena_allocator(memory.arena)
                            .build()])
                        .map_err(e)?;
                }
            }
            if threads.intra_op > 0 {
                builder = builder.with_intra_threads(threads.intra_op).map_err(e)?;
            }
            if threads.inter_op > 0 {
                builder = builder.with_inter_threads(threads.inter_op).map_err(e)?;
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
        let inputs = describe(&source_name, "input", session.inputs())?;
        let spec = ModelSpec {
            name: name.to_string(),
            utf8_inputs: text::utf8_inputs_of(source, &inputs),
            inputs,
            outputs: describe(&source_name, "output", session.outputs())?,
            // What the ONNX file says; the model's configuration decides.
            max_batch_size: 0,
            max_request_rows: 0,
        };
        let shrink = match shrinkage(options, &device) {
            None => None,
            Some(devices) => {
                let mut run = RunOptions::new().map_err(|e| load_error(e.to_string()))?;
                run.set("memory.enable_memory_arena_shrinkage", &devices)
                    .map_err(|e| load_error(e.to_string()))?;
                Some(run)
            }
        };
        Ok((
            Instance {
                session: ManuallyDrop::new(session),
                spec: Arc::new(spec),
                shrink,
                arena: Arena::new(Instant::now()),
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
        let total_rows: usize = requests.iter().map(|r| r.batch_size.unwrap_or(1)).sum();
        let shrink = self
            .shrink
            .as_ref()
            .filter(|_| self.arena.shrink_after(total_rows, started));
        let prepared = Instant::now();
        let results = match shrink {
            Some(options) => self.session.run_with_options(values, options),
            None => self.session.run(values),
        }
        .map_err(|e| {
            if e.code() == ort::error::ErrorCode::InvalidArgument {
                BackendError::Rejected(e.to_string())
            } else {
                run_error(e)
            }
        })?;
        if shrink.is_some() {
            release_freed_memory();
        }
        let ran = Instant::now();

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
            runs: 1,
            times: ComputeTimes {
                input: prepared - started,
                infer: ran - prepared,
                output: done - ran,
            },
        })
    }
}

/// The arenas a shrinking run shrinks (ONNX Runtime's
/// `memory.enable_memory_arena_shrinkage` value), if any: only arenas that
/// exist can be shrunk.
fn shrinkage(options: &SessionOptions, device: &Device) -> Option<String> {
    if !options.memory.shrink_after_run {
        return None;
    }
    let cpu = options.memory.arena.then(|| "cpu:0".to_string());
    let gpu = match device {
        Device::Gpu { device_id, .. } => Some(format!("gpu:{device_id}")),
        Device::Cpu => None,
    };
    let list: Vec<String> = cpu.into_iter().chain(gpu).collect();
    (!list.is_empty()).then(|| list.join(";"))
}

impl Executor for Instance {
    type Job = DecodedRequest;
    type Output = Vec<Tensor>;

    /// After a burst of large batches, one small run shrinks the arena, so
    /// the memory comes back while the model waits, not at its next
    /// request.
    fn idle(&mut self) {
        if self.shrink.is_none() || !self.arena.holds_more_than_one_row_needs() {
            return;
        }
        self.arena.make_due(Instant::now());
        if let Err(e) = self.warm_up() {
            tracing::debug!(model = %self.spec.name, "no idle run to shrink the arena: {e}");
        }
    }

    fn execute(
        &mut self,
        jobs: &[&DecodedRequest],
        max_rows: usize,
    ) -> Result<Executed<Vec<Tensor>>, ExecError> {
        let error = |e: BackendError| {
            if matches!(e, BackendError::Rejected(_)) {
                ExecError::request(e.to_string())
            } else {
                ExecError::server(e.to_string())
            }
        };
        let [job] = jobs else {
            return self.run_batch(jobs).map_err(error);
        };
        let chunks = job.split_rows(max_rows);
        if chunks.len() == 1 {
            return self.run_batch(jobs).map_err(error);
        }
        // Larger than any batch: run in chunks the model takes (bounding
        // the activations' memory), then join the outputs.
        let mut times = ComputeTimes::default();
        let mut parts: Vec<Vec<Tensor>> = Vec::new();
        for chunk in &chunks {
            let done = self.run_batch(&[chunk]).map_err(error)?;
            times.input += done.times.input;
            times.infer += done.times.infer;
            times.output += done.times.output;
            let outputs = done.outputs.into_iter().next().unwrap_or_default();
            if parts.is_empty() {
                parts = outputs.into_iter().map(|t| vec![t]).collect();
            } else {
                for (part, tensor) in parts.iter_mut().zip(outputs) {
                    part.push(tensor);
                }
            }
        }
        let joining = Instant::now();
        let outputs = parts
            .into_iter()
            .map(|part| {
                Tensor::join_rows(part).ok_or_else(|| {
                    ExecError::server("the chunks' outputs differ in shape and cannot be joined")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        times.output += joining.elapsed();
        Ok(Executed {
            outputs: vec![outputs],
            times,
            runs: chunks.len(),
        })
    }
}
