//! Many requests into one set of ONNX Runtime tensors, and the outputs back
//! out per request: the concatenate → run → split of a batch.
//!
//! Each request's bytes are copied once, straight into the batch tensor;
//! each output is copied once, straight from ONNX Runtime's tensor into the
//! response's buffer.

use bytes::Bytes;
use ort::AsPointer;
use ort::value::{DynTensor, DynValue, ValueType};

use super::types::{datatype_of, element_type_of};
use super::{BackendError, strings};
use crate::tensor::{BytesWriter, DataType, Tensor};

/// Builds the tensor for one model input from the same input of every
/// request in the batch, concatenated along dimension 0 (or taken as is for
/// a single request).
pub(super) fn concat(parts: &[&Tensor]) -> ort::Result<DynTensor> {
    let first = parts[0];
    let mut shape: Vec<i64> = first.shape.iter().map(|&d| d as i64).collect();
    if parts.len() > 1 {
        // Requests in one batch share their non-batch dimensions (the
        // scheduler's batch key), so only dimension 0 adds up.
        shape[0] = parts.iter().map(|t| t.shape[0] as i64).sum();
    }
    if first.datatype == DataType::Bytes {
        let streams: Vec<&[u8]> = parts.iter().map(|t| &t.data[..]).collect();
        return strings::tensor_from_streams(&shape, &streams);
    }
    let element_size = first
        .datatype
        .element_size()
        .expect("only BYTES lacks an element size, and BYTES returned above");
    let allocator = ort::memory::Allocator::default();
    let elements: usize = shape.iter().map(|&d| d as usize).product();
    let mut value = DynTensor::new(&allocator, element_type_of(first.datatype), shape)?;
    let len: usize = parts.iter().map(|t| t.data.len()).sum();
    // The tensor holds `elements` elements of `element_size` bytes; the parts
    // must fill exactly that, or the copy below would write out of bounds.
    assert_eq!(
        elements.checked_mul(element_size),
        Some(len),
        "batch parts do not fill the tensor they are copied into"
    );
    if len == 0 {
        return Ok(value);
    }
    // SAFETY: ONNX Runtime allocated the tensor for `elements` elements of
    // `element_size` bytes, which is `len` bytes (asserted just above).
    let dst = unsafe { std::slice::from_raw_parts_mut(value.data_ptr_mut().cast::<u8>(), len) };
    let mut offset = 0;
    for part in parts {
        let dst = &mut dst[offset..offset + part.data.len()];
        if part.datatype == DataType::Bool {
            // A C++ bool must be 0 or 1; the wire allows any byte.
            for (d, &s) in dst.iter_mut().zip(part.data.iter()) {
                *d = u8::from(s != 0);
            }
        } else {
            dst.copy_from_slice(&part.data);
        }
        offset += part.data.len();
    }
    Ok(value)
}

/// One output tensor of a run, readable per request.
pub(super) struct Output<'v> {
    datatype: DataType,
    shape: Vec<usize>,
    /// Fixed-size types: the raw bytes. BYTES: the concatenated contents.
    data: &'v [u8],
    /// BYTES only: the start of every element in `data`, plus the end.
    offsets: Option<(Vec<u8>, Vec<usize>)>,
}

impl<'v> Output<'v> {
    /// Reads an ONNX Runtime output value.
    pub(super) fn read(name: &str, value: &'v DynValue) -> Result<Output<'v>, BackendError> {
        let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
            return Err(BackendError::Run(format!(
                "output '{name}' is not a tensor"
            )));
        };
        let datatype = datatype_of(*ty).ok_or_else(|| {
            BackendError::Run(format!("output '{name}' has unsupported type {ty:?}"))
        })?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        let count: usize = shape.iter().product();
        let run_error = |e: ort::Error| BackendError::Run(e.to_string());
        match datatype.element_size() {
            None => {
                let (content, offsets) =
                    strings::tensor_contents(value, count).map_err(run_error)?;
                Ok(Output {
                    datatype,
                    shape,
                    data: &[],
                    offsets: Some((content, offsets)),
                })
            }
            Some(size) => {
                let len = count * size;
                let data = if len == 0 {
                    &[][..]
                } else {
                    let mut ptr: *mut std::ffi::c_void = std::ptr::null_mut();
                    // SAFETY: `value` is a live CPU tensor of `count` elements
                    // of `size` bytes, borrowed for 'v from the run's outputs.
                    unsafe {
                        ort::Error::result_from_status((ort::api().GetTensorMutableData)(
                            value.ptr().cast_mut(),
                            &mut ptr,
                        ))
                        .map_err(run_error)?;
                        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
                    }
                };
                Ok(Output {
                    datatype,
                    shape,
                    data,
                    offsets: None,
                })
            }
        }
    }

    /// Rows along dimension 0.
    pub(super) fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The whole tensor (a request run on its own).
    pub(super) fn whole(&self, name: &str) -> Tensor {
        self.rows_slice(name, 0, self.rows(), self.shape.clone())
    }

    /// Rows `start..start + rows` as a tensor of their own.
    pub(super) fn slice(&self, name: &str, start: usize, rows: usize) -> Tensor {
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows;
        }
        self.rows_slice(name, start, rows, shape)
    }

    fn rows_slice(&self, name: &str, start: usize, rows: usize, shape: Vec<usize>) -> Tensor {
        let per_row: usize = self.shape.iter().skip(1).product();
        let data = match (&self.offsets, self.datatype.element_size()) {
            (Some((content, offsets)), _) => {
                let first = start * per_row;
                let last = (start + rows) * per_row;
                let mut out = BytesWriter::with_capacity(
                    offsets.get(last).copied().unwrap_or(content.len())
                        - offsets.get(first).copied().unwrap_or(content.len())
                        + 4 * (last - first),
                );
                for i in first..last {
                    let begin = offsets[i];
                    let end = offsets.get(i + 1).copied().unwrap_or(content.len());
                    // ONNX Runtime strings come from inputs bounded by the
                    // message size limit, far below 4 GiB each.
                    out.push(&content[begin..end])
                        .expect("an ONNX Runtime string is shorter than 4 GiB");
                }
                out.finish()
            }
            (None, Some(size)) => {
                let row_bytes = per_row * size;
                Bytes::copy_from_slice(&self.data[start * row_bytes..(start + rows) * row_bytes])
            }
            (None, None) => Bytes::new(),
        };
        Tensor {
            name: name.to_string(),
            datatype: self.datatype,
            shape,
            data,
        }
    }
}
