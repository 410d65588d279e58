//! BYTES (ONNX `string`) tensors through the raw C API.
//!
//! `ort`'s string helpers go through `CString` and `String`, which reject
//! interior NUL bytes and non-UTF-8 data; the protocol's BYTES are arbitrary
//! bytes. `GetResizedStringTensorElementBuffer` and `GetStringTensorContent`
//! carry explicit lengths, so every byte survives the round trip.

use ort::AsPointer;
use ort::value::{DynTensor, TensorElementType};

fn check(status: ort::sys::OrtStatusPtr) -> ort::Result<()> {
    // SAFETY: `status` was just returned by an ONNX Runtime API call.
    unsafe { ort::Error::result_from_status(status) }
}

/// Creates a string tensor of `shape` from validated raw BYTES streams
/// whose element counts add up to product(shape), in order.
pub(super) fn tensor_from_streams(shape: &[i64], streams: &[&[u8]]) -> ort::Result<DynTensor> {
    let allocator = ort::memory::Allocator::default();
    let mut tensor = DynTensor::new(&allocator, TensorElementType::String, shape.to_vec())?;
    let api = ort::api();
    let mut index = 0usize;
    for stream in streams {
        let mut rest = *stream;
        while let Some((prefix, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_le_bytes(*prefix) as usize;
            let (element, tail) = tail.split_at_checked(len).ok_or_else(|| {
                ort::Error::new(format!(
                    "BYTES element {index} runs past the end of its data"
                ))
            })?;
            let mut buffer: *mut std::ffi::c_char = std::ptr::null_mut();
            // SAFETY: the tensor is a string tensor with product(shape)
            // elements and `index` stays below that (the streams were
            // validated to hold exactly that many); ONNX Runtime resizes
            // element `index` to `len` bytes and returns a buffer of that
            // size, which is filled at once.
            unsafe {
                check((api.GetResizedStringTensorElementBuffer)(
                    tensor.ptr_mut(),
                    index,
                    len,
                    &mut buffer,
                ))?;
                if len > 0 {
                    std::ptr::copy_nonoverlapping(element.as_ptr(), buffer.cast::<u8>(), len);
                }
            }
            rest = tail;
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
