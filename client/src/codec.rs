//! The protocol's raw tensor encoding, usable on its own.
//!
//! Raw tensors are flat, row-major, little-endian and unpadded; `BOOL` is one
//! byte, 0 or 1. A raw `BYTES` tensor is a stream of elements, each a 4-byte
//! little-endian length followed by that many bytes. These functions are
//! what [`InferBuilder`](crate::InferBuilder) and [`Output`](crate::Output)
//! use; they are public so tests can hand-craft (or deliberately break) the
//! blobs of a [`pb::ModelInferRequest`](crate::pb::ModelInferRequest)
//! (`.into()` turns a `Vec<u8>` into the message's `Bytes` without copying).
//! Element counts and the `BYTES` stream are the [`oxserve_proto`] crate's,
//! shared with the oxserve server.
//!
//! Decoding never trusts a length it has not checked against the bytes
//! actually present, so a hostile shape or prefix cannot make it allocate
//! more than a small multiple of the input's size.

use bytes::Bytes;
pub use oxserve_proto::element_count;
use oxserve_proto::{BytesElements, BytesWriter, MalformedBytes};

use crate::{DataType, Error, Result, pb::InferTensorContents};

/// A fixed-size element type that maps to one protocol [`DataType`].
///
/// Implemented for `bool`, `i8`..`i64`, `u8`..`u64`, `f32` and `f64`, and
/// with the `half` feature for `half::f16` (`FP16`) and `half::bf16`
/// (`BF16`). The trait is sealed: its encoding methods are private so they
/// can change without breaking callers. Without the `half` feature, send
/// `FP16` and `BF16` with
/// [`InferBuilder::input_raw`](crate::InferBuilder::input_raw) and read them
/// with [`Output::raw`](crate::Output::raw).
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The protocol datatype of this element type.
    const DATATYPE: DataType;
}

pub(crate) mod sealed {
    use crate::pb::InferTensorContents;

    /// The private half of [`Element`](super::Element).
    pub trait Sealed: Sized {
        /// Appends `data`'s raw encoding to `out`.
        fn encode(data: &[Self], out: &mut Vec<u8>);
        /// Decodes a raw blob whose length the caller has checked is a
        /// whole number of elements.
        fn decode(raw: &[u8]) -> Result<Vec<Self>, String>;
        /// Reads the typed `contents` field this type travels in.
        fn from_contents(contents: &InferTensorContents) -> Result<Vec<Self>, String>;
    }
}

macro_rules! numeric_element {
    ($($t:ty => $dt:ident, $field:ident;)*) => {$(
        impl Element for $t {
            const DATATYPE: DataType = DataType::$dt;
        }

        impl sealed::Sealed for $t {
            fn encode(data: &[Self], out: &mut Vec<u8>) {
                out.reserve(size_of_val(data));
                for x in data {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }

            fn decode(raw: &[u8]) -> Result<Vec<Self>, String> {
                let (chunks, rest) = raw.as_chunks::<{ size_of::<$t>() }>();
                if !rest.is_empty() {
                    return Err(format!(
                        "{} bytes is not a whole number of {} elements",
                        raw.len(),
                        DataType::$dt
                    ));
                }
                Ok(chunks.iter().map(|c| <$t>::from_le_bytes(*c)).collect())
            }

            fn from_contents(contents: &InferTensorContents) -> Result<Vec<Self>, String> {
                contents
                    .$field
                    .iter()
                    .map(|&v| {
                        <$t>::try_from(v).map_err(|_| {
                            format!("value {v} is out of range for {}", DataType::$dt)
                        })
                    })
                    .collect()
            }
        }
    )*};
}

numeric_element! {
    u8 => Uint8, uint_contents;
    u16 => Uint16, uint_contents;
    u32 => Uint32, uint_contents;
    u64 => Uint64, uint64_contents;
    i8 => Int8, int_contents;
    i16 => Int16, int_contents;
    i32 => Int32, int_contents;
    i64 => Int64, int64_contents;
    f32 => Fp32, fp32_contents;
    f64 => Fp64, fp64_contents;
}

/// Half-precision floats have no typed `contents` field: they travel raw.
#[cfg(feature = "half")]
macro_rules! half_element {
    ($($t:ty => $dt:ident;)*) => {$(
        impl Element for $t {
            const DATATYPE: DataType = DataType::$dt;
        }

        impl sealed::Sealed for $t {
            fn encode(data: &[Self], out: &mut Vec<u8>) {
                out.reserve(size_of_val(data));
                for x in data {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }

            fn decode(raw: &[u8]) -> Result<Vec<Self>, String> {
                let (chunks, rest) = raw.as_chunks::<2>();
                if !rest.is_empty() {
                    return Err(format!(
                        "{} bytes is not a whole number of {} elements",
                        raw.len(),
                        DataType::$dt
                    ));
                }
                Ok(chunks.iter().map(|c| <$t>::from_le_bytes(*c)).collect())
            }

            fn from_contents(contents: &InferTensorContents) -> Result<Vec<Self>, String> {
                // An empty `contents` is an empty tensor; anything else is
                // a field this datatype cannot travel in.
                if *contents == InferTensorContents::default() {
                    Ok(Vec::new())
                } else {
                    Err(format!("{} travels raw only, but came in typed contents", DataType::$dt))
                }
            }
        }
    )*};
}

#[cfg(feature = "half")]
half_element! {
    half::f16 => Fp16;
    half::bf16 => Bf16;
}

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
}

impl sealed::Sealed for bool {
    fn encode(data: &[Self], out: &mut Vec<u8>) {
        out.extend(data.iter().map(|&b| u8::from(b)));
    }

    fn decode(raw: &[u8]) -> Result<Vec<Self>, String> {
        raw.iter()
            .enumerate()
            .map(|(i, &b)| match b {
                0 => Ok(false),
                1 => Ok(true),
                other => Err(format!("BOOL element {i} is {other}, not 0 or 1")),
            })
            .collect()
    }

    fn from_contents(contents: &InferTensorContents) -> Result<Vec<Self>, String> {
        Ok(contents.bool_contents.clone())
    }
}

/// The raw encoding of `data`.
pub fn encode<T: Element>(data: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    T::encode(data, &mut out);
    out
}

/// Decodes a raw blob that should hold `count` elements of type `T`.
///
/// # Errors
/// [`Error::Decode`] if the blob's length is not `count` elements, or (for
/// `bool`) a byte is neither 0 nor 1.
pub fn decode<T: Element>(raw: &[u8], count: usize) -> Result<Vec<T>> {
    decode_fixed(raw, count).map_err(Error::Decode)
}

pub(crate) fn decode_fixed<T: Element>(raw: &[u8], count: usize) -> Result<Vec<T>, String> {
    check_fixed_len(T::DATATYPE, raw.len(), count)?;
    T::decode(raw)
}

/// Checks that `len` raw bytes are exactly `count` elements of `datatype`,
/// which must have a fixed element size.
fn check_fixed_len(datatype: DataType, len: usize, count: usize) -> Result<(), String> {
    let size = datatype
        .element_size()
        .ok_or_else(|| format!("{datatype} has no fixed element size"))?;
    let expected = count
        .checked_mul(size)
        .ok_or_else(|| format!("{count} {datatype} elements overflow the address space"))?;
    if len == expected {
        Ok(())
    } else {
        Err(format!(
            "{count} {datatype} elements need {expected} bytes, got {len}"
        ))
    }
}

/// The raw `BYTES` encoding of `elements`: each a 4-byte little-endian
/// length followed by its bytes.
///
/// # Errors
/// [`Error::Mismatch`] if an element is longer than `u32::MAX` bytes, which
/// the length prefix cannot express.
pub fn encode_bytes<B: AsRef<[u8]>>(elements: &[B]) -> Result<Vec<u8>> {
    // Unshared, so this hands over the buffer rather than copying it.
    encode_bytes_shared(elements).map(Vec::from)
}

/// [`encode_bytes`] as the [`Bytes`] a request carries.
pub(crate) fn encode_bytes_shared<B: AsRef<[u8]>>(elements: &[B]) -> Result<Bytes> {
    BytesWriter::encode(elements).map_err(Error::mismatch)
}

/// Decodes a raw `BYTES` blob that should hold `count` elements.
///
/// # Errors
/// [`Error::Decode`] if a length prefix is truncated, claims more bytes than
/// remain, or the stream holds other than `count` elements.
pub fn decode_bytes(raw: &[u8], count: usize) -> Result<Vec<Vec<u8>>> {
    decode_bytes_inner(raw, count).map_err(Error::Decode)
}

pub(crate) fn decode_bytes_inner(raw: &[u8], count: usize) -> Result<Vec<Vec<u8>>, String> {
    // Every element takes at least its 4-byte prefix, so this capacity is
    // bounded by the bytes actually received, whatever `count` claims.
    let mut out = Vec::with_capacity(count.min(raw.len() / 4));
    for element in BytesElements::new(raw) {
        let element = element.map_err(malformed)?;
        if out.len() == count {
            return Err(format!(
                "BYTES tensor should hold {count} elements, found more"
            ));
        }
        out.push(element.to_vec());
    }
    check_bytes_count(out.len(), count)?;
    Ok(out)
}

/// Checks that `raw` is a well-formed blob of `count` elements of
/// `datatype`, for data handed over already encoded.
pub(crate) fn validate_raw(datatype: DataType, raw: &[u8], count: usize) -> Result<(), String> {
    if datatype == DataType::Bytes {
        let found = BytesElements::count_all(raw).map_err(malformed)?;
        check_bytes_count(found, count)
    } else {
        check_fixed_len(datatype, raw.len(), count)
    }
}

fn check_bytes_count(found: usize, count: usize) -> Result<(), String> {
    if found == count {
        Ok(())
    } else {
        Err(format!(
            "BYTES tensor should hold {count} elements, found {found}"
        ))
    }
}

/// A malformed stream's error, saying what kind of data it was.
fn malformed(error: MalformedBytes) -> String {
    format!("BYTES {error}")
}

#[cfg(test)]
mod tests;
