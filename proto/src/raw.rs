//! The raw tensor encoding: element counts of shapes, and the `BYTES`
//! stream (each element a 4-byte little-endian length, then that many
//! bytes).
//!
//! Nothing here trusts a length it has not checked against the bytes
//! actually present, so a hostile shape or prefix cannot make a reader
//! allocate more than the input holds.

use bytes::{BufMut, Bytes, BytesMut};

/// The number of elements a shape holds, or `None` if a dimension is
/// negative (a variable dimension, `-1`, has no count) or the product does
/// not fit in `usize`.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &dim| {
        acc.checked_mul(usize::try_from(dim).ok()?)
    })
}

/// Why a raw `BYTES` stream cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedBytes {
    /// Fewer than 4 bytes left where a length prefix must start.
    #[error("element {index} at byte {offset}: truncated length prefix ({remaining} of 4 bytes)")]
    TruncatedPrefix {
        /// Index of the element.
        index: usize,
        /// Where its prefix starts.
        offset: usize,
        /// Bytes left in the stream.
        remaining: usize,
    },
    /// A prefix that declares more bytes than the stream has left.
    #[error(
        "element {index} at byte {offset} declares {declared} bytes, but only {remaining} remain"
    )]
    Overrun {
        /// Index of the element.
        index: usize,
        /// Where its prefix starts.
        offset: usize,
        /// The length it declares.
        declared: u32,
        /// Bytes after its prefix.
        remaining: usize,
    },
}

/// The elements of a raw `BYTES` stream, borrowed, in order. The first
/// malformed element ends the iteration with its error.
#[derive(Clone, Debug)]
pub struct BytesElements<'a> {
    data: &'a [u8],
    rest: &'a [u8],
    index: usize,
}

impl<'a> BytesElements<'a> {
    /// Iterates over the elements of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        BytesElements {
            data,
            rest: data,
            index: 0,
        }
    }

    /// Counts the elements of `data` without allocating, or says where the
    /// stream stops making sense.
    pub fn count_all(data: &'a [u8]) -> Result<usize, MalformedBytes> {
        BytesElements::new(data).try_fold(0usize, |n, element| element.map(|_| n + 1))
    }

    fn split(&self) -> Result<(&'a [u8], &'a [u8]), MalformedBytes> {
        let index = self.index;
        let offset = self.data.len() - self.rest.len();
        let Some((prefix, tail)) = self.rest.split_first_chunk::<4>() else {
            return Err(MalformedBytes::TruncatedPrefix {
                index,
                offset,
                remaining: self.rest.len(),
            });
        };
        let declared = u32::from_le_bytes(*prefix);
        usize::try_from(declared)
            .ok()
            .and_then(|len| tail.split_at_checked(len))
            .ok_or(MalformedBytes::Overrun {
                index,
                offset,
                declared,
                remaining: tail.len(),
            })
    }
}

impl<'a> Iterator for BytesElements<'a> {
    type Item = Result<&'a [u8], MalformedBytes>;

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

/// An element longer than a 4-byte length prefix can express.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BYTES element {index} is {len} bytes, more than a 4-byte length prefix can express")]
pub struct ElementTooLong {
    /// Index of the element.
    pub index: usize,
    /// Its length.
    pub len: usize,
}

/// Builds a raw `BYTES` stream element by element.
#[derive(Debug, Default)]
pub struct BytesWriter {
    out: BytesMut,
    count: usize,
}

impl BytesWriter {
    /// A writer with room for `capacity` bytes of prefixes and data.
    pub fn with_capacity(capacity: usize) -> Self {
        BytesWriter {
            out: BytesMut::with_capacity(capacity),
            count: 0,
        }
    }

    /// Appends one element.
    pub fn push(&mut self, element: &[u8]) -> Result<(), ElementTooLong> {
        let len = u32::try_from(element.len()).map_err(|_| ElementTooLong {
            index: self.count,
            len: element.len(),
        })?;
        self.out.put_u32_le(len);
        self.out.put_slice(element);
        self.count += 1;
        Ok(())
    }

    /// Elements written so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished stream.
    pub fn finish(self) -> Bytes {
        self.out.freeze()
    }

    /// The raw stream of `elements`.
    pub fn encode<B: AsRef<[u8]>>(elements: &[B]) -> Result<Bytes, ElementTooLong> {
        let total = elements
            .iter()
            .map(|e| e.as_ref().len().saturating_add(4))
            .fold(0usize, usize::saturating_add);
        let mut writer = BytesWriter::with_capacity(total);
        for element in elements {
            writer.push(element.as_ref())?;
        }
        Ok(writer.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_counts_reject_negative_and_overflowing_shapes() {
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, 3, 4]), Some(24));
        assert_eq!(element_count(&[0, 1 << 40]), Some(0));
        assert_eq!(element_count(&[-1, 4]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn streams_round_trip_every_byte() {
        let elements: [&[u8]; 4] = [b"", b"a", &[0, 0xff, 0], "héllo".as_bytes()];
        let raw = BytesWriter::encode(&elements).unwrap();
        assert_eq!(raw.len(), 4 * 4 + 1 + 3 + 6);
        let read: Vec<&[u8]> = BytesElements::new(&raw).map(Result::unwrap).collect();
        assert_eq!(read, elements);
        assert_eq!(BytesElements::count_all(&raw), Ok(4));
        assert_eq!(BytesElements::count_all(&[]), Ok(0));
    }

    #[test]
    fn a_truncated_prefix_is_reported_with_its_place() {
        let mut raw = BytesWriter::encode(&["ab"]).unwrap().to_vec();
        raw.extend_from_slice(&[1, 0]);
        let err = BytesElements::count_all(&raw).unwrap_err();
        assert_eq!(
            err,
            MalformedBytes::TruncatedPrefix {
                index: 1,
                offset: 6,
                remaining: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "element 1 at byte 6: truncated length prefix (2 of 4 bytes)"
        );
    }

    #[test]
    fn a_prefix_past_the_end_is_reported_without_allocating() {
        let raw = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = BytesElements::count_all(&raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "element 0 at byte 0 declares 4294967295 bytes, but only 3 remain"
        );
        // The iterator ends after the error.
        let mut it = BytesElements::new(&raw);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    #[test]
    fn the_writer_counts_its_elements() {
        let mut w = BytesWriter::default();
        assert!(w.is_empty());
        w.push(b"x").unwrap();
        w.push(b"").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(&w.finish()[..], &[1, 0, 0, 0, b'x', 0, 0, 0, 0]);
    }
}
