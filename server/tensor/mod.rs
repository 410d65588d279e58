//! Tensors on the wire: datatypes, decoding and validation of request inputs
//! against a model's metadata, and encoding of outputs.
//!
//! Everything here is a pure function over protocol messages: no I/O, no ONNX
//! Runtime. Every tensor that leaves this module is in the protocol's raw
//! encoding (flat, row-major, little-endian; BYTES as 4-byte length prefixes),
//! already checked against its shape, so the backend can copy it into an ONNX
//! Runtime tensor without further checks.

mod decode;
mod encode;
mod error;
mod rows;
mod spec;

pub(crate) use decode::batch_key;
pub use decode::{DecodedRequest, decode_request};
pub use encode::encode_outputs;
pub(crate) use error::InvalidInput;
pub use oxserve_proto::DataType;
pub(crate) use oxserve_proto::{BytesElements, BytesWriter, MalformedBytes, element_count};
pub use spec::{ModelSpec, TensorSpec};

use bytes::Bytes;

/// A validated tensor in raw wire encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Input or output name.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Concrete shape (no variable dimensions).
    pub shape: Vec<usize>,
    /// Raw encoding of the elements; for BYTES, length-prefixed elements
    /// whose count equals the product of `shape`.
    pub data: Bytes,
}

impl Tensor {
    /// Number of elements (product of the shape).
    pub fn element_count(&self) -> usize {
        // Shapes are validated on the way in (decode) or come from ONNX
        // Runtime, which allocated that many elements, so this cannot overflow.
        self.shape.iter().product()
    }
}
