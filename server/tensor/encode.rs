//! Output tensors → response fields (`outputs` + `raw_output_contents`).

use bytes::Bytes;
use oxserve_proto::inference::model_infer_response::InferOutputTensor;

use super::Tensor;

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
