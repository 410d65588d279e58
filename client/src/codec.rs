//! The protocol's raw tensor encoding, usable on its own.
//!
//! Raw tensors are flat, row-major, little-endian and unpadded; `BOOL` is one
//! byte, 0 or 1. A raw `BYTES` tensor is a stream of elements, each a 4-byte
//! little-endian length followed by that many bytes. These functions are
//! what [`InferBuilder`](crate::InferBuilder) and [`Output`](crate::Output)
//! use; they are public so tests can hand-craft (or deliberately break) the
//! blobs of a [`pb::ModelInferRequest`](crate::pb::ModelInferRequest).
//!
//! Decoding never trusts a length it has not checked against the bytes
//! actually present, so a hostile shape or prefix cannot make it allocate
//! more than a small multiple of the input's size.

use crate::{Datatype, Error, Result, pb::InferTensorContents};

/// A fixed-size element type that maps to one protocol [`Datatype`].
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
    const DATATYPE: Datatype;
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
            const DATATYPE: Datatype = Datatype::$dt;
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
                        Datatype::$dt
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
                            format!("value {v} is out of range for {}", Datatype::$dt)
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
            const DATATYPE: Datatype = Datatype::$dt;
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
                        Datatype::$dt
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
                    Err(format!("{} travels raw only, but came in typed contents", Datatype::$dt))
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
    const DATATYPE: Datatype = Datatype::Bool;
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

/// The number of elements a shape holds, or `None` if a dimension is
/// negative (a variable dimension, `-1`, has no count) or the product does
/// not fit in `usize`.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &dim| {
        acc.checked_mul(usize::try_from(dim).ok()?)
    })
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
fn check_fixed_len(datatype: Datatype, len: usize, count: usize) -> Result<(), String> {
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
    let total = elements
        .iter()
        .map(|e| e.as_ref().len() + 4)
        .fold(0usize, usize::saturating_add);
    let mut out = Vec::with_capacity(total);
    for (i, element) in elements.iter().enumerate() {
        let element = element.as_ref();
        let len = u32::try_from(element.len()).map_err(|_| {
            Error::mismatch(format!(
                "BYTES element {i} is {} bytes, more than a 4-byte length prefix can express",
                element.len()
            ))
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(element);
    }
    Ok(out)
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
        let element = element?;
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
pub(crate) fn validate_raw(datatype: Datatype, raw: &[u8], count: usize) -> Result<(), String> {
    match datatype {
        Datatype::Bytes => {
            let mut found = 0usize;
            for element in BytesElements::new(raw) {
                element?;
                found += 1;
            }
            check_bytes_count(found, count)
        }
        fixed => check_fixed_len(fixed, raw.len(), count),
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

/// The elements of a raw `BYTES` stream, borrowed; stops after the first
/// malformed one.
struct BytesElements<'a> {
    rest: &'a [u8],
    index: usize,
}

impl<'a> BytesElements<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Self {
            rest: raw,
            index: 0,
        }
    }

    fn split(&self) -> Result<(&'a [u8], &'a [u8]), String> {
        let index = self.index;
        let Some((prefix, tail)) = self.rest.split_first_chunk::<4>() else {
            return Err(format!(
                "BYTES element {index}: truncated length prefix ({} of 4 bytes)",
                self.rest.len()
            ));
        };
        let len = u32::from_le_bytes(*prefix);
        usize::try_from(len)
            .ok()
            .and_then(|len| tail.split_at_checked(len))
            .ok_or_else(|| {
                format!(
                    "BYTES element {index} claims {len} bytes, but only {} remain",
                    tail.len()
                )
            })
    }
}

impl<'a> Iterator for BytesElements<'a> {
    type Item = Result<&'a [u8], String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.split().map(|(element, tail)| {
            self.rest = tail;
            element
        });
        if item.is_err() {
            self.rest = &[];
        }
        self.index += 1;
        Some(item)
    }
}

#[cfg(test)]
mod tests;
