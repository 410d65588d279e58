//! Tensor data as the REST protocol writes it in JSON: a flat or nested
//! array in row-major order, numbers for numeric types, booleans for BOOL,
//! strings for BYTES. Read straight into the raw wire encoding the core
//! takes (one pass, no intermediate values), and written back from it.
//!
//! Element counts and shapes are not checked here: the core checks the raw
//! bytes against the shape, the same way for every transport.

use std::fmt;

use oxserve_proto::inference::{InferParameter, ParameterChoice};
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde_json::Value;

use crate::tensor::{BytesElements, DataType};

/// Reads the JSON `data` of one input of type `datatype` into its raw
/// encoding.
pub(super) fn read_data(datatype: DataType, data: &str) -> Result<Vec<u8>, String> {
    let mut elements = Elements {
        datatype,
        out: Vec::with_capacity(data.len()),
        index: 0,
    };
    let mut de = serde_json::Deserializer::from_str(data);
    (&mut elements)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| e.to_string())?;
    Ok(elements.out)
}

struct Elements {
    datatype: DataType,
    out: Vec<u8>,
    index: usize,
}

impl Elements {
    fn fail<E: serde::de::Error>(&self, what: impl fmt::Display) -> E {
        E::custom(format!(
            "element {} is {what}, not a {} value",
            self.index,
            self.datatype.as_str()
        ))
    }

    fn integer<E: serde::de::Error>(&mut self, value: i128) -> Result<(), E> {
        macro_rules! put {
            ($t:ty) => {
                match <$t>::try_from(value) {
                    Ok(v) => self.out.extend_from_slice(&v.to_le_bytes()),
                    Err(_) => return Err(self.fail(format_args!("{value} (out of range)"))),
                }
            };
        }
        match self.datatype {
            DataType::Uint8 => put!(u8),
            DataType::Uint16 => put!(u16),
            DataType::Uint32 => put!(u32),
            DataType::Uint64 => put!(u64),
            DataType::Int8 => put!(i8),
            DataType::Int16 => put!(i16),
            DataType::Int32 => put!(i32),
            DataType::Int64 => put!(i64),
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => {
                return self.float(value as f64);
            }
            DataType::Bool | DataType::Bytes => return Err(self.fail(value)),
        }
        self.index += 1;
        Ok(())
    }

    fn float<E: serde::de::Error>(&mut self, value: f64) -> Result<(), E> {
        match self.datatype {
            DataType::Fp16 => self
                .out
                .extend_from_slice(&half::f16::from_f64(value).to_le_bytes()),
            DataType::Bf16 => self
                .out
                .extend_from_slice(&half::bf16::from_f64(value).to_le_bytes()),
            DataType::Fp32 => self.out.extend_from_slice(&(value as f32).to_le_bytes()),
            DataType::Fp64 => self.out.extend_from_slice(&value.to_le_bytes()),
            DataType::Bool
            | DataType::Bytes
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64 => return Err(self.fail(value)),
        }
        self.index += 1;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for &mut Elements {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Elements {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} values", self.datatype.as_str())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Nested arrays are flattened in row-major order.
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<(), E> {
        if self.datatype != DataType::Bool {
            return Err(self.fail(value));
        }
        self.out.push(u8::from(value));
        self.index += 1;
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<(), E> {
        self.integer(value.into())
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<(), E> {
        self.integer(value.into())
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        self.float(value)
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<(), E> {
        if self.datatype != DataType::Bytes {
            return Err(self.fail(format_args!("the string {value:?}")));
        }
        let len =
            u32::try_from(value.len()).map_err(|_| self.fail("a string longer than 4 GiB"))?;
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(value.as_bytes());
        self.index += 1;
        Ok(())
    }
}

/// Raw output data written as a flat JSON array.
pub(super) struct Data<'a> {
    pub datatype: DataType,
    pub raw: &'a [u8],
}

impl Data<'_> {
    /// Why this output cannot be written as JSON, if it cannot: BYTES
    /// elements that are not UTF-8, or a malformed stream.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.datatype == DataType::Bytes {
            for element in BytesElements::new(self.raw) {
                let element = element.map_err(|e| e.to_string())?;
                if std::str::from_utf8(element).is_err() {
                    return Err("a BYTES element is not UTF-8 text, which JSON cannot carry; ask for it with \"binary_data\": true".into());
                }
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        macro_rules! numbers {
            ($t:ty, $n:expr) => {{
                let chunks = self.raw.chunks_exact($n);
                let mut seq = serializer.serialize_seq(Some(chunks.len()))?;
                for chunk in chunks {
                    let mut bytes = [0u8; $n];
                    bytes.copy_from_slice(chunk);
                    seq.serialize_element(&<$t>::from_le_bytes(bytes))?;
                }
                seq.end()
            }};
        }
        match self.datatype {
            DataType::Bool => {
                let mut seq = serializer.serialize_seq(Some(self.raw.len()))?;
                for &b in self.raw {
                    seq.serialize_element(&(b != 0))?;
                }
                seq.end()
            }
            DataType::Uint8 => numbers!(u8, 1),
            DataType::Uint16 => numbers!(u16, 2),
            DataType::Uint32 => numbers!(u32, 4),
            DataType::Uint64 => numbers!(u64, 8),
            DataType::Int8 => numbers!(i8, 1),
            DataType::Int16 => numbers!(i16, 2),
            DataType::Int32 => numbers!(i32, 4),
            DataType::Int64 => numbers!(i64, 8),
            DataType::Fp16 => {
                let chunks = self.raw.chunks_exact(2);
                let mut seq = serializer.serialize_seq(Some(chunks.len()))?;
                for c in chunks {
                    seq.serialize_element(&half::f16::from_le_bytes([c[0], c[1]]).to_f32())?;
                }
                seq.end()
            }
            DataType::Bf16 => {
                let chunks = self.raw.chunks_exact(2);
                let mut seq = serializer.serialize_seq(Some(chunks.len()))?;
                for c in chunks {
                    seq.serialize_element(&half::bf16::from_le_bytes([c[0], c[1]]).to_f32())?;
                }
                seq.end()
            }
            DataType::Fp32 => numbers!(f32, 4),
            DataType::Fp64 => numbers!(f64, 8),
            DataType::Bytes => {
                let mut seq = serializer.serialize_seq(None)?;
                // `check` ran first: every element is well-formed UTF-8.
                for element in BytesElements::new(self.raw).flatten() {
                    seq.serialize_element(std::str::from_utf8(element).unwrap_or_default())?;
                }
                seq.end()
            }
        }
    }
}

/// A JSON parameter value as the protocol's parameter.
pub(super) fn parameter(name: &str, value: &Value) -> Result<InferParameter, String> {
    Ok(match value {
        Value::Bool(b) => (*b).into(),
        Value::String(s) => s.as_str().into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.into(),
            (None, Some(u), _) => u.into(),
            (None, None, Some(f)) => f.into(),
            (None, None, None) => return Err(format!("parameter '{name}': {n} is not a number")),
        },
        Value::Null | Value::Array(_) | Value::Object(_) => {
            return Err(format!(
                "parameter '{name}' must be a bool, a number or a string"
            ));
        }
    })
}

/// The protocol's parameter as a JSON value.
pub(super) fn parameter_json(parameter: &InferParameter) -> Value {
    match &parameter.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Value::from(*b),
        Some(ParameterChoice::Int64Param(i)) => Value::from(*i),
        Some(ParameterChoice::Uint64Param(u)) => Value::from(*u),
        Some(ParameterChoice::DoubleParam(f)) => Value::from(*f),
        Some(ParameterChoice::StringParam(s)) => Value::from(s.as_str()),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_flatten_to_little_endian_raw() {
        let raw = read_data(DataType::Fp32, "[[1.5, 2], [3, -4]]").unwrap();
        let want: Vec<u8> = [1.5f32, 2.0, 3.0, -4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(raw, want);
        assert_eq!(
            read_data(DataType::Int16, "[-2, 300]").unwrap(),
            [254, 255, 44, 1]
        );
        assert_eq!(read_data(DataType::Bool, "[true, false]").unwrap(), [1, 0]);
        assert_eq!(
            read_data(DataType::Bytes, r#"["hi", ""]"#).unwrap(),
            [2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]
        );
        assert_eq!(
            read_data(DataType::Fp16, "[1.0]").unwrap(),
            half::f16::from_f32(1.0).to_le_bytes()
        );
        assert_eq!(
            read_data(DataType::Uint64, "[18446744073709551615]").unwrap(),
            [255; 8]
        );
    }

    #[test]
    fn values_of_the_wrong_kind_or_range_are_refused_with_their_index() {
        for (datatype, data) in [
            (DataType::Uint8, "[1, 256]"),
            (DataType::Int8, "[-129]"),
            (DataType::Int32, "[1.5]"),
            (DataType::Fp32, r#"["1"]"#),
            (DataType::Bytes, "[1]"),
            (DataType::Bool, "[1]"),
            (DataType::Fp32, "[1, {}]"),
            (DataType::Fp32, "[1] trailing"),
        ] {
            let error = read_data(datatype, data).unwrap_err();
            assert!(!error.is_empty(), "{datatype:?} {data}");
        }
        let error = read_data(DataType::Uint8, "[1, 2, 256]").unwrap_err();
        assert!(error.contains("element 2"), "{error}");
    }

    #[test]
    fn raw_outputs_write_as_flat_arrays() {
        let json = |datatype, raw: &[u8]| serde_json::to_string(&Data { datatype, raw }).unwrap();
        let floats: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(json(DataType::Fp32, &floats), "[0.5,-1.0]");
        assert_eq!(json(DataType::Bool, &[1, 0]), "[true,false]");
        assert_eq!(json(DataType::Int8, &[255]), "[-1]");
        let text = [2, 0, 0, 0, b'h', b'i'];
        assert_eq!(json(DataType::Bytes, &text), r#"["hi"]"#);
        let not_text = [1, 0, 0, 0, 0xff];
        assert!(
            Data {
                datatype: DataType::Bytes,
                raw: &not_text
            }
            .check()
            .is_err()
        );
    }
}
