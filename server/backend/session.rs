//! One ONNX Runtime session: load, describe, warm up, run.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ort::AsPointer;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynTensor, DynValue, TensorElementType, ValueType};

use super::{BackendError, strings};
use crate::tensor::{DataType, ModelSpec, Tensor, TensorSpec};

/// How sessions are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads ONNX Runtime uses inside one operator; 0 lets it choose.
    pub intra_op_threads: usize,
}

/// A loaded model instance: one session, driven by one thread at a time.
pub struct Instance {
    session: Session,
    spec: Arc<ModelSpec>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("spec", &self.spec)
            .finish()
    }
}

fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn element_type_of(datatype: DataType) -> TensorElementType {
    match datatype {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Bf16 => TensorElementType::Bfloat16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
    }
}

fn describe(
    path: &Path,
    what: &'static str,
    outlets: &[ort::value::Outlet],
) -> Result<Vec<TensorSpec>, BackendError> {
    outlets
        .iter()
        .map(|outlet| {
            let unsupported = |ty: String| BackendError::Unsupported {
                path: path.to_path_buf(),
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

fn run_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::Run(e.to_string())
}

impl Instance {
    /// Loads `path` as model `name`.
    pub fn load(
        env: &Environment,
        name: &str,
        path: &Path,
        options: &SessionOptions,
    ) -> Result<Instance, BackendError> {
        let load_error = |reason: String| BackendError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let mut builder = Session::builder(env)
            .map_err(|e| load_error(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load_error(e.to_string()))?;
        if options.intra_op_threads > 0 {
            builder = builder
                .with_intra_threads(options.intra_op_threads)
                .map_err(|e| load_error(e.to_string()))?;
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| load_error(e.to_string()))?;
        let spec = ModelSpec {
            name: name.to_string(),
            inputs: describe(path, "input", session.inputs())?,
            outputs: describe(path, "output", session.outputs())?,
        };
        Ok(Instance {
            session,
            spec: Arc::new(spec),
        })
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
        let all: Vec<usize> = (0..self.spec.outputs.len()).collect();
        self.run(&inputs, &all).map(|_| ())
    }

    /// Runs the model on validated inputs (one per model input, in model
    /// order) and returns the outputs at `outputs` (indices into the spec).
    pub fn run(
        &mut self,
        inputs: &[Tensor],
        outputs: &[usize],
    ) -> Result<Vec<Tensor>, BackendError> {
        let mut values: Vec<(&str, DynTensor)> = Vec::with_capacity(inputs.len());
        for (spec, tensor) in self.spec.inputs.iter().zip(inputs) {
            values.push((spec.name.as_str(), to_ort(tensor).map_err(run_error)?));
        }
        let spec = Arc::clone(&self.spec);
        let results = self.session.run(values).map_err(run_error)?;
        outputs
            .iter()
            .map(|&index| {
                let out = &spec.outputs[index];
                let value = results.get(&out.name).ok_or_else(|| {
                    BackendError::Run(format!("ONNX Runtime returned no output '{}'", out.name))
                })?;
                from_ort(&out.name, value)
            })
            .collect()
    }
}

/// Copies a validated raw tensor into a new ONNX Runtime tensor.
fn to_ort(tensor: &Tensor) -> ort::Result<DynTensor> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&d| d as i64).collect();
    if tensor.datatype == DataType::Bytes {
        return strings::tensor_from_raw(&shape, &tensor.data);
    }
    let allocator = ort::memory::Allocator::default();
    let mut value = DynTensor::new(&allocator, element_type_of(tensor.datatype), shape)?;
    let len = tensor.data.len();
    if len > 0 {
        let dst = value.data_ptr_mut().cast::<u8>();
        // SAFETY: the tensor was allocated for product(shape) elements of this
        // datatype, which is exactly `len` bytes (checked when decoding).
        let dst = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        if tensor.datatype == DataType::Bool {
            // A C++ bool must be 0 or 1; the wire allows any byte.
            for (d, &s) in dst.iter_mut().zip(tensor.data.iter()) {
                *d = u8::from(s != 0);
            }
        } else {
            dst.copy_from_slice(&tensor.data);
        }
    }
    Ok(value)
}

/// Copies an ONNX Runtime output into a raw tensor.
fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, BackendError> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(BackendError::Run(format!(
            "output '{name}' is not a tensor"
        )));
    };
    let datatype = datatype_of(*ty)
        .ok_or_else(|| BackendError::Run(format!("output '{name}' has unsupported type {ty:?}")))?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = shape.iter().product();
    let data = match datatype.element_size() {
        None => strings::tensor_to_raw(value, count).map_err(run_error)?,
        Some(size) => {
            let len = count * size;
            if len == 0 {
                Bytes::new()
            } else {
                let mut ptr: *mut std::ffi::c_void = std::ptr::null_mut();
                // SAFETY: `value` is a live CPU tensor of `count` elements of
                // `size` bytes each, owned by the session outputs borrowed here.
                unsafe {
                    ort::Error::result_from_status((ort::api().GetTensorMutableData)(
                        value.ptr().cast_mut(),
                        &mut ptr,
                    ))
                    .map_err(run_error)?;
                    Bytes::copy_from_slice(std::slice::from_raw_parts(ptr.cast::<u8>(), len))
                }
            }
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        datatype,
        shape,
        data,
    })
}
