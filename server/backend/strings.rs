//! BYTES (ONNX `string`) tensors through the raw C API.
//!
//! `ort`'s string helpers go through `CString` and `String`, which reject
//! interior NUL bytes and non-UTF-8 data; the protocol's BYTES are arbitrary
//! bytes. `GetResizedStringTensorElementBuffer` and `GetStringTensorContent`
//! carry explicit lengths, so every byte survives the round trip.

use ort::AsPointer;
use ort::value::{DynTensor, TensorElementType};

use crate::tensor::BytesElements;

/// Turns the status an ONNX Runtime call returned into a result.
///
/// # Safety
/// `status` must be a status pointer just returned by an ONNX Runtime API
/// call (null for success), not yet released.
unsafe fn check(status: ort::sys::OrtStatusPtr) -> ort::Result<()> {
    // SAFETY: the caller passes a fresh status, which this takes over.
    unsafe { ort::Error::result_from_status(status) }
}

/// Creates a string tensor of `shape` from validated raw BYTES streams
/// whose element counts add up to product(shape), in order.
pub(super) fn tensor_from_streams(shape: &[i64], streams: &[&[u8]]) -> ort::Result<DynTensor> {
    let allocator = ort::memory::Allocator::default();
    let mut tensor = DynTensor::new(&allocator, TensorElementType::String, shape.to_vec())?;
    let capacity: usize = shape.iter().map(|&d| d.max(0) as usize).product();
    let api = ort::api();
    let mut index = 0usize;
    for stream in streams {
        for element in BytesElements::new(stream) {
            let element = element.map_err(|e| ort::Error::new(e.to_string()))?;
            if index >= capacity {
                return Err(ort::Error::new(format!(
                    "the BYTES streams hold more than the {capacity} elements of the tensor"
                )));
            }
            let mut buffer: *mut std::ffi::c_char = std::ptr::null_mut();
            // SAFETY: the tensor is a string tensor of `capacity` elements
            // and `index` is below that (checked just above); ONNX Runtime
            // resizes element `index` to `element.len()` bytes and returns
            // a buffer of that size, which is filled at once.
            unsafe {
                check((api.GetResizedStringTensorElementBuffer)(
                    tensor.ptr_mut(),
                    index,
                    element.len(),
                    &mut buffer,
                ))?;
                if !element.is_empty() {
                    std::ptr::copy_nonoverlapping(
                        element.as_ptr(),
                        buffer.cast::<u8>(),
                        element.len(),
                    );
                }
            }
            index += 1;
        }
    }
    Ok(tensor)
}

/// The contents of a string tensor with `count` elements: all bytes
/// concatenated, and the start offset of each element.
pub(super) fn tensor_contents(
    value: &ort::value::DynValue,
    count: usize,
) -> ort::Result<(Vec<u8>, Vec<usize>)> {
    let api = ort::api();
    let mut total = 0usize;
    // SAFETY: `value` is a live string tensor (checked by the caller).
    unsafe { check((api.GetStringTensorDataLength)(value.ptr(), &mut total))? };
    let mut content = vec![0u8; total];
    let mut offsets = vec![0usize; count];
    if count > 0 {
        // SAFETY: `content` has `total` bytes and `offsets` one slot per
        // element, the sizes ONNX Runtime asks for.
        unsafe {
            check((api.GetStringTensorContent)(
                value.ptr(),
                content.as_mut_ptr().cast(),
                total,
                offsets.as_mut_ptr(),
                count,
            ))?;
        }
    }
    // Offsets must rise within the content, or slicing would panic later.
    let ordered =
        offsets.windows(2).all(|w| w[0] <= w[1]) && offsets.last().is_none_or(|&o| o <= total);
    if !ordered {
        return Err(ort::Error::new(
            "ONNX Runtime returned string offsets out of order",
        ));
    }
    Ok((content, offsets))
}
