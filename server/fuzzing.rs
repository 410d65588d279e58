//! Entry points for the fuzz targets in `fuzz/` (and their regression
//! tests): everything that parses outside input, from bytes, without ONNX
//! Runtime, a socket or a file. Not a stable API.
//!
//! Each function must return for any input, without panicking and without
//! allocating more than a bounded multiple of the input; a fuzz target
//! that finds otherwise has found a bug. What each returns is only there
//! so that tests can check it did real work.

use bytes::Bytes;
use oxserve_proto::inference::ModelInferRequest;
use prost::Message;

use crate::backend::Device;
use crate::model_config::{self, LoadPlan, complete, warmups};
use crate::tensor::{DataType, InvalidInput, ModelSpec, TensorSpec, decode_request};

fn tensor(name: &str, datatype: DataType, dims: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        dims: dims.to_vec(),
    }
}

/// Models with the signatures the fuzzers aim at: the examples (`mlp`,
/// `intent` with its UTF-8 text input), two inputs with a batch dimension
/// (`add_sub`), any-bytes BYTES (`identity_bytes`), a fixed shape without
/// batching (`fixed`) and a raw-only type (`identity_fp16`).
pub fn models() -> Vec<ModelSpec> {
    let spec = |name: &str, inputs, outputs, max_batch_size, utf8_inputs| ModelSpec {
        name: String::from(name),
        inputs,
        outputs,
        max_batch_size,
        max_request_rows: if max_batch_size > 0 { 8 } else { 0 },
        utf8_inputs,
    };
    vec![
        spec(
            "mlp",
            vec![tensor("input", DataType::Fp32, &[-1, 784])],
            vec![tensor("output", DataType::Fp32, &[-1, 10])],
            8,
            vec![],
        ),
        spec(
            "intent",
            vec![tensor("text", DataType::Bytes, &[-1, 1])],
            vec![
                tensor("label", DataType::Bytes, &[-1]),
                tensor("probabilities", DataType::Fp32, &[-1, 6]),
            ],
            8,
            vec![0],
        ),
        spec(
            "add_sub",
            vec![
                tensor("INPUT0", DataType::Fp32, &[-1, 16]),
                tensor("INPUT1", DataType::Fp32, &[-1, 16]),
            ],
            vec![
                tensor("OUTPUT0", DataType::Fp32, &[-1, 16]),
                tensor("OUTPUT1", DataType::Fp32, &[-1, 16]),
            ],
            8,
            vec![],
        ),
        spec(
            "identity_bytes",
            vec![tensor("INPUT0", DataType::Bytes, &[-1, -1])],
            vec![tensor("OUTPUT0", DataType::Bytes, &[-1, -1])],
            8,
            vec![],
        ),
        spec(
            "fixed",
            vec![tensor("INPUT0", DataType::Int64, &[2, 3])],
            vec![tensor("OUTPUT0", DataType::Int64, &[2, 3])],
            0,
            vec![],
        ),
        spec(
            "identity_fp16",
            vec![tensor("INPUT0", DataType::Fp16, &[-1, -1])],
            vec![tensor("OUTPUT0", DataType::Fp16, &[-1, -1])],
            8,
            vec![],
        ),
    ]
}

/// Validates `request` against the model it names (else every model):
/// the number of models that accepted it.
fn validate(request: &ModelInferRequest) -> usize {
    let models = models();
    let named: Vec<&ModelSpec> = models
        .iter()
        .filter(|m| m.name == request.model_name)
        .collect();
    let candidates = if named.is_empty() {
        models.iter().collect()
    } else {
        named
    };
    candidates
        .into_iter()
        .filter(|spec| check_decoded(spec, request).is_ok())
        .count()
}

/// `decode_request`, and the invariants the backend relies on when it
/// accepts: one tensor per input, sizes that match their shapes.
fn check_decoded(spec: &ModelSpec, request: &ModelInferRequest) -> Result<(), InvalidInput> {
    let decoded = decode_request(spec, request, &[])?;
    assert_eq!(decoded.inputs.len(), spec.inputs.len());
    for tensor in &decoded.inputs {
        let count = tensor.element_count();
        match tensor.datatype.element_size() {
            Some(size) => assert_eq!(tensor.data.len(), count * size),
            None => assert_eq!(
                crate::tensor::BytesElements::count_all(&tensor.data).ok(),
                Some(count)
            ),
        }
    }
    Ok(())
}

/// A ModelInferRequest as it arrives over gRPC: decoded from `data`
/// (typed and raw contents, BYTES prefixes, shapes, all of it), then
/// validated. Returns whether it decoded, and how many models accepted it.
pub fn infer_request(data: &[u8]) -> (bool, usize) {
    match ModelInferRequest::decode(data) {
        Ok(request) => (true, validate(&request)),
        Err(_) => (false, 0),
    }
}

/// A config.pbtxt: parsed, planned, completed against an ONNX signature
/// (the first byte picks which), and its warm-up samples built. Returns
/// whether the configuration was accepted.
pub fn model_config(data: &[u8]) -> bool {
    let Some((&pick, text)) = data.split_first() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let Ok(written) = model_config::parse(text) else {
        return false;
    };
    let defaults = crate::Config::default().model_defaults();
    let Ok(plan) = LoadPlan::new(Some(&written), &defaults) else {
        return false;
    };
    let _ = plan.select_versions(&[1, 2, 3]);
    let models = models();
    let onnx = &models[usize::from(pick) % models.len()];
    let mut onnx = onnx.clone();
    onnx.max_batch_size = 0;
    onnx.max_request_rows = 0;
    let Ok(resolved) = complete(&onnx.name, Some(&written), &onnx, &[Device::Cpu], &defaults)
    else {
        return false;
    };
    warmups(&resolved.config, &resolved.spec, None).is_ok()
}

/// A REST inference body, parsed as the REST transport parses it, then
/// validated: JSON, or (binary tensor extension) a zero byte, the JSON
/// header's length in two bytes little-endian (the
/// `Inference-Header-Content-Length` header), then the body. Returns
/// whether it parsed, and how many models accepted it.
pub fn rest_body(data: &[u8]) -> (bool, usize) {
    let (header_length, body) = match data {
        [0, a, b, rest @ ..] => (Some(usize::from(u16::from_le_bytes([*a, *b]))), rest),
        _ => (None, data),
    };
    match crate::http::parse_body(Bytes::copy_from_slice(body), header_length) {
        Ok(request) => (true, validate(&request)),
        Err(_) => (false, 0),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file under `fuzz/<dir>/<target>/`, named.
    fn inputs(dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(dir)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&path) else {
            return Vec::new();
        };
        let mut files: Vec<(String, Vec<u8>)> = entries
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).expect("a corpus file reads"))
            })
            .collect();
        files.sort();
        files
    }

    /// The committed seeds are what they claim: valid inputs that each
    /// entry point accepts, so the fuzzers start from the real thing.
    #[test]
    fn every_seed_is_accepted() {
        let seeds = inputs("corpus", "infer_request");
        assert!(seeds.len() >= 3, "infer_request seeds");
        for (name, data) in seeds {
            assert!(
                super::infer_request(&data).1 > 0,
                "infer_request seed {name}"
            );
        }
        let seeds = inputs("corpus", "model_config");
        assert!(seeds.len() >= 3, "model_config seeds");
        for (name, data) in seeds {
            assert!(super::model_config(&data), "model_config seed {name}");
        }
        let seeds = inputs("corpus", "rest_body");
        assert!(seeds.len() >= 3, "rest_body seeds");
        for (name, data) in seeds {
            assert!(super::rest_body(&data).1 > 0, "rest_body seed {name}");
        }
    }

    /// Inputs the fuzzers once crashed on (fuzz/regressions/<target>/):
    /// each must now return.
    #[test]
    fn past_crashes_return() {
        for (_, data) in inputs("regressions", "infer_request") {
            super::infer_request(&data);
        }
        for (_, data) in inputs("regressions", "model_config") {
            super::model_config(&data);
        }
        for (_, data) in inputs("regressions", "rest_body") {
            super::rest_body(&data);
        }
    }
}
