//! Output tensors → response fields (`outputs` + `raw_output_contents`).

use bytes::{Bytes, BytesMut};

use super::Tensor;
use super::decode::put_bytes_element;
use crate::proto::inference::model_infer_response::InferOutputTensor;

/// Builds a raw BYTES stream element by element.
#[derive(Debug, Default)]
pub struct BytesWriter {
    out: BytesMut,
}

impl BytesWriter {
    /// A writer with room for `capacity` bytes of prefixes and data.
    pub fn with_capacity(capacity: usize) -> Self {
        BytesWriter {
            out: BytesMut::with_capacity(capacity),
        }
    }

    /// Appends one element.
    pub fn push(&mut self, element: &[u8]) {
        put_bytes_element(&mut self.out, element);
    }

    /// The finished stream.
    pub fn finish(self) -> Bytes {
        self.out.freeze()
    }
}

/// Splits tensors into the response's output metadata and raw contents, in
/// the same order. Outputs always travel raw, as the reference servers send
/// them and as tritonclient reads them first.
pub fn encode_outputs(tensors: Vec<Tensor>) -> (Vec<InferOutputTensor>, Vec<Bytes>) {
    tensors
        .into_iter()
        .map(|t| {
            let meta = InferOutputTensor {
                name: t.name,
                datatype: t.datatype.as_str().to_string(),
                // ONNX Runtime dims are i64 to begin with.
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                parameters: Default::default(),
                contents: None,
            };
            (meta, t.data)
        })
        .unzip()
}
