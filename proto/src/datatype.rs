//! The protocol's tensor element types and their wire sizes.

use std::{fmt, str::FromStr};

/// A tensor element type, as named on the wire (`"FP32"`, `"BYTES"`, ...).
///
/// The protocol's strings are case-sensitive; [`DataType::as_str`],
/// [`DataType::parse`] and [`FromStr`] convert exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
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

impl DataType {
    /// Every datatype, in the protocol's table order.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's name for this datatype.
    pub const fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol name; the match is exact, as the protocol is
    /// case-sensitive.
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Bytes per element in the raw encoding; `None` for `BYTES`, whose
    /// elements vary in length.
    pub const fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }

    /// The typed field of `InferTensorContents` that carries this datatype,
    /// or `None` for `FP16` and `BF16`, which travel raw only.
    pub const fn contents_field(self) -> Option<&'static str> {
        match self {
            DataType::Bool => Some("bool_contents"),
            DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => Some("uint_contents"),
            DataType::Uint64 => Some("uint64_contents"),
            DataType::Int8 | DataType::Int16 | DataType::Int32 => Some("int_contents"),
            DataType::Int64 => Some("int64_contents"),
            DataType::Fp32 => Some("fp32_contents"),
            DataType::Fp64 => Some("fp64_contents"),
            DataType::Bytes => Some("bytes_contents"),
            DataType::Fp16 | DataType::Bf16 => None,
        }
    }

    /// Triton's model-configuration enum value for this datatype
    /// (`TYPE_FP32`, ...; `BYTES` is `TYPE_STRING`).
    pub const fn config_type(self) -> crate::inference::DataType {
        use crate::inference::DataType as T;
        match self {
            DataType::Bool => T::TypeBool,
            DataType::Uint8 => T::TypeUint8,
            DataType::Uint16 => T::TypeUint16,
            DataType::Uint32 => T::TypeUint32,
            DataType::Uint64 => T::TypeUint64,
            DataType::Int8 => T::TypeInt8,
            DataType::Int16 => T::TypeInt16,
            DataType::Int32 => T::TypeInt32,
            DataType::Int64 => T::TypeInt64,
            DataType::Fp16 => T::TypeFp16,
            DataType::Bf16 => T::TypeBf16,
            DataType::Fp32 => T::TypeFp32,
            DataType::Fp64 => T::TypeFp64,
            DataType::Bytes => T::TypeString,
        }
    }

    /// The datatype of a model-configuration enum value, if the protocol
    /// has one (`TYPE_INVALID` has none).
    pub fn from_config_type(value: crate::inference::DataType) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.config_type() == value)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = UnknownDataType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::parse(s).ok_or_else(|| UnknownDataType(s.to_owned()))
    }
}

/// A string that names no protocol datatype (they are case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown datatype '{0}'")]
pub struct UnknownDataType(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(d.as_str().parse::<DataType>(), Ok(d));
            assert_eq!(DataType::parse(d.as_str()), Some(d));
            assert_eq!(d.to_string(), d.as_str());
        }
    }

    #[test]
    fn names_are_case_sensitive_and_exact() {
        assert_eq!(
            "fp32".parse::<DataType>(),
            Err(UnknownDataType("fp32".into()))
        );
        for bad in ["FP32 ", "FLOAT", ""] {
            assert_eq!(DataType::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn element_sizes_match_the_protocol() {
        let sizes: Vec<_> = DataType::ALL.iter().map(|d| d.element_size()).collect();
        assert_eq!(
            sizes,
            [1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8]
                .map(Some)
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn config_types_round_trip_and_bytes_is_string() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_config_type(d.config_type()), Some(d));
        }
        assert_eq!(
            DataType::Bytes.config_type(),
            crate::inference::DataType::TypeString
        );
        assert_eq!(
            DataType::from_config_type(crate::inference::DataType::TypeInvalid),
            None
        );
    }

    #[test]
    fn only_half_types_lack_a_typed_field() {
        let raw_only: Vec<_> = DataType::ALL
            .into_iter()
            .filter(|d| d.contents_field().is_none())
            .collect();
        assert_eq!(raw_only, [DataType::Fp16, DataType::Bf16]);
    }
}
