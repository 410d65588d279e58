//! The protocol's tensor element types.

use std::{fmt, str::FromStr};

/// A tensor element type, as named on the wire (`"FP32"`, `"BYTES"`, ...).
///
/// The protocol's strings are case-sensitive; [`Datatype::as_str`] and
/// [`FromStr`] convert exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Datatype {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: IEEE 754 half precision, sent raw only.
    Fp16,
    /// `BF16`: bfloat16, sent raw only.
    Bf16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: variable-length elements; raw, each is a 4-byte
    /// little-endian length followed by that many bytes.
    Bytes,
}

impl Datatype {
    /// Every datatype, in the protocol's table order.
    pub const ALL: [Datatype; 14] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Bf16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    /// The protocol's name for this datatype.
    pub const fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Bf16 => "BF16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the raw encoding; `None` for `BYTES`, whose
    /// elements vary in length.
    pub const fn element_size(self) -> Option<usize> {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => Some(1),
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => Some(2),
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => Some(4),
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => Some(8),
            Datatype::Bytes => None,
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Datatype {
    type Err = UnknownDatatype;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Datatype::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDatatype(s.to_owned()))
    }
}

/// A string that names no protocol datatype (they are case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown datatype '{0}'")]
pub struct UnknownDatatype(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Datatype::ALL {
            assert_eq!(d.as_str().parse::<Datatype>(), Ok(d));
            assert_eq!(d.to_string(), d.as_str());
        }
    }

    #[test]
    fn names_are_case_sensitive() {
        assert_eq!(
            "fp32".parse::<Datatype>(),
            Err(UnknownDatatype("fp32".into()))
        );
        assert!("FLOAT".parse::<Datatype>().is_err());
        assert!("".parse::<Datatype>().is_err());
    }

    #[test]
    fn element_sizes_match_the_protocol() {
        let sizes: Vec<_> = Datatype::ALL.iter().map(|d| d.element_size()).collect();
        assert_eq!(
            sizes,
            [1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8]
                .map(Some)
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
    }
}
