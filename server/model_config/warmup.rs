//! Triton's `model_warmup`: sample requests built from the configuration,
//! run on every instance before a version is marked ready.

use std::path::Path;

use bytes::Bytes;
use oxserve_proto::inference::model_warmup::input::InputDataType;
use oxserve_proto::inference::{ModelConfig, ModelWarmup};

use super::{ModelConfigError, field_error};
use crate::tensor::{BytesElements, DataType, DecodedRequest, ModelSpec, Tensor, element_count};

/// The directory, beside config.pbtxt, that `input_data_file` names files in.
pub(crate) const WARMUP_DIR: &str = "warmup";

/// One warm-up sample and how many times to run it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Warmup {
    /// The sample's name, for messages.
    pub(crate) name: String,
    /// The request, valid for the model.
    pub(crate) request: DecodedRequest,
    /// Runs, at least one.
    pub(crate) count: u32,
}

/// The warm-up samples of a completed `config` for a model of `spec`;
/// `model_dir` is where `warmup/` files are read from (`None` for a model
/// uploaded with its load request, which has no directory).
pub(crate) fn warmups(
    config: &ModelConfig,
    spec: &ModelSpec,
    model_dir: Option<&Path>,
) -> Result<Vec<Warmup>, ModelConfigError> {
    config
        .model_warmup
        .iter()
        .enumerate()
        .map(|(i, warmup)| sample(&format!("model_warmup[{i}]"), warmup, spec, model_dir))
        .collect()
}

fn sample(
    field: &str,
    warmup: &ModelWarmup,
    spec: &ModelSpec,
    model_dir: Option<&Path>,
) -> Result<Warmup, ModelConfigError> {
    let batching = spec.max_batch_size > 0;
    let rows = usize::try_from(warmup.batch_size).unwrap_or(usize::MAX);
    if batching && !(1..=spec.max_batch_size).contains(&rows) {
        return Err(field_error(
            format!("{field}.batch_size"),
            format!("{rows} is outside 1..={}", spec.max_batch_size),
        ));
    }
    if !batching && rows > 1 {
        return Err(field_error(
            format!("{field}.batch_size"),
            format!("{rows}: the model does not batch (max_batch_size is 0); use 0 or 1"),
        ));
    }
    if let Some(unknown) = warmup
        .inputs
        .keys()
        .find(|name| spec.input_index(name).is_none())
    {
        return Err(field_error(
            format!("{field}.inputs"),
            format!("the model has no input '{unknown}'"),
        ));
    }
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for (index, input_spec) in spec.inputs.iter().enumerate() {
        let field = format!("{field}.inputs['{}']", input_spec.name);
        let input = warmup
            .inputs
            .get(&input_spec.name)
            .ok_or_else(|| field_error(&field, "missing: every input needs sample data"))?;
        let datatype = oxserve_proto::inference::DataType::try_from(input.data_type)
            .ok()
            .and_then(DataType::from_config_type)
            .ok_or_else(|| {
                field_error(
                    format!("{field}.data_type"),
                    format!("{} is not a datatype", input.data_type),
                )
            })?;
        if datatype != input_spec.datatype {
            return Err(field_error(
                format!("{field}.data_type"),
                format!(
                    "{}, but the model's input has {}",
                    datatype.config_type().as_str_name(),
                    input_spec.datatype.config_type().as_str_name()
                ),
            ));
        }
        let mut shape = Vec::with_capacity(input.dims.len() + 1);
        if batching {
            shape.push(rows as i64);
        }
        shape.extend_from_slice(&input.dims);
        if !input_spec.accepts_shape(&shape) {
            return Err(field_error(
                format!("{field}.dims"),
                format!(
                    "{:?} do not fit the model's input {:?}",
                    input.dims, input_spec.dims
                ),
            ));
        }
        let count = element_count(&shape)
            .filter(|&c| c <= 1 << 28)
            .ok_or_else(|| {
                field_error(format!("{field}.dims"), format!("{shape:?} is too large"))
            })?;
        let data = match &input.input_data_type {
            None | Some(InputDataType::ZeroData(_)) => zeros(datatype, count),
            Some(InputDataType::RandomData(_)) => random(datatype, count, index as u64),
            Some(InputDataType::InputDataFile(file)) => {
                read_file(&field, file, model_dir, datatype, count)?
            }
        };
        inputs.push(Tensor {
            name: input_spec.name.clone(),
            datatype,
            shape: shape.iter().map(|&d| d as usize).collect(),
            data,
        });
    }
    Ok(Warmup {
        name: warmup.name.clone(),
        request: DecodedRequest {
            inputs,
            outputs: (0..spec.outputs.len()).collect(),
            batch_size: batching.then_some(rows),
        },
        count: warmup.count.max(1),
    })
}

/// Zero bytes are zeros of every fixed-size type; for BYTES, four zero
/// bytes are one empty element.
fn zeros(datatype: DataType, count: usize) -> Bytes {
    Bytes::from(vec![0u8; count * datatype.element_size().unwrap_or(4)])
}

/// Deterministic values that are valid for the type: booleans 0/1, floats
/// in [0, 1), integers 0..=127, BYTES 1..=16 lowercase letters.
fn random(datatype: DataType, count: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let unit = |bits: u64| (bits >> 11) as f64 / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(count * datatype.element_size().unwrap_or(12));
    for _ in 0..count {
        let bits = next();
        match datatype {
            DataType::Bool => out.push((bits & 1) as u8),
            DataType::Fp16 => {
                out.extend_from_slice(&half::f16::from_f64(unit(bits)).to_bits().to_le_bytes())
            }
            DataType::Bf16 => {
                out.extend_from_slice(&half::bf16::from_f64(unit(bits)).to_bits().to_le_bytes())
            }
            DataType::Fp32 => out.extend_from_slice(&(unit(bits) as f32).to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&unit(bits).to_le_bytes()),
            DataType::Bytes => {
                let len = 1 + (bits % 16) as usize;
                out.extend_from_slice(&(len as u32).to_le_bytes());
                out.extend((0..len).map(|i| b'a' + ((bits >> (i * 4)) % 26) as u8));
            }
            DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64 => {
                // A small non-negative value, little-endian in every width.
                let size = datatype.element_size().unwrap_or(1);
                out.push((bits % 128) as u8);
                out.extend(std::iter::repeat_n(0u8, size - 1));
            }
        }
    }
    Bytes::from(out)
}

fn read_file(
    field: &str,
    file: &str,
    model_dir: Option<&Path>,
    datatype: DataType,
    count: usize,
) -> Result<Bytes, ModelConfigError> {
    let field = format!("{field}.input_data_file");
    if file.is_empty() || file.contains(['/', '\\']) || file == ".." || file == "." {
        return Err(field_error(
            field,
            format!("'{file}' must be a file name in the model's {WARMUP_DIR}/ directory"),
        ));
    }
    let Some(dir) = model_dir else {
        return Err(field_error(
            field,
            "a model uploaded with its load request has no warmup/ directory to read from",
        ));
    };
    let path = dir.join(WARMUP_DIR).join(file);
    let data = std::fs::read(&path)
        .map_err(|e| field_error(&field, format!("cannot read {}: {e}", path.display())))?;
    match datatype.element_size() {
        Some(size) if data.len() != count * size => Err(field_error(
            field,
            format!(
                "{} holds {} bytes; the sample needs {count} elements of {size} bytes",
                path.display(),
                data.len()
            ),
        )),
        Some(_) => Ok(Bytes::from(data)),
        None => match BytesElements::count_all(&data) {
            Ok(found) if found == count => Ok(Bytes::from(data)),
            Ok(found) => Err(field_error(
                field,
                format!(
                    "{} holds {found} BYTES elements; the sample needs {count}",
                    path.display()
                ),
            )),
            Err(e) => Err(field_error(field, format!("{}: {e}", path.display()))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::parse;
    use crate::tensor::TensorSpec;

    fn spec(max_batch_size: usize) -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            inputs: vec![
                TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    dims: vec![-1, 3],
                },
                TensorSpec {
                    name: "t".into(),
                    datatype: DataType::Bytes,
                    dims: vec![-1, 1],
                },
            ],
            outputs: vec![TensorSpec {
                name: "y".into(),
                datatype: DataType::Fp32,
                dims: vec![-1],
            }],
            max_batch_size,
            max_request_rows: usize::MAX,
            utf8_inputs: Vec::new(),
        }
    }

    fn config(text: &str) -> ModelConfig {
        parse(text).unwrap().config
    }

    #[test]
    fn zero_and_random_samples_fit_the_model() {
        let c = config(
            r#"model_warmup [ {
                name: "s", batch_size: 2, count: 3,
                inputs { key: "x" value: { data_type: TYPE_FP32, dims: [3], random_data: true } }
                inputs { key: "t" value: { data_type: TYPE_STRING, dims: [1], zero_data: true } }
            } ]"#,
        );
        let w = warmups(&c, &spec(8), None).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].count, 3);
        let r = &w[0].request;
        assert_eq!(r.batch_size, Some(2));
        assert_eq!(r.inputs[0].shape, [2, 3]);
        assert_eq!(r.inputs[0].data.len(), 24);
        let floats: Vec<f32> = r.inputs[0]
            .data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(floats.iter().all(|f| (0.0..1.0).contains(f)), "{floats:?}");
        assert_eq!(BytesElements::count_all(&r.inputs[1].data), Ok(2));
    }

    #[test]
    fn samples_that_do_not_fit_name_the_field() {
        let cases = [
            (
                r#"model_warmup [ { batch_size: 1, inputs { key: "x" value: { data_type: TYPE_FP32, dims: [3], zero_data: true } } } ]"#,
                "inputs['t']",
            ),
            (
                r#"model_warmup [ { batch_size: 1, inputs { key: "x" value: { data_type: TYPE_INT32, dims: [3], zero_data: true } } inputs { key: "t" value: { data_type: TYPE_STRING, dims: [1], zero_data: true } } } ]"#,
                "data_type",
            ),
            (
                r#"model_warmup [ { batch_size: 1, inputs { key: "x" value: { data_type: TYPE_FP32, dims: [4], zero_data: true } } inputs { key: "t" value: { data_type: TYPE_STRING, dims: [1], zero_data: true } } } ]"#,
                "dims",
            ),
            (
                r#"model_warmup [ { batch_size: 9, inputs { key: "x" value: { data_type: TYPE_FP32, dims: [3], zero_data: true } } inputs { key: "t" value: { data_type: TYPE_STRING, dims: [1], zero_data: true } } } ]"#,
                "batch_size",
            ),
            (
                r#"model_warmup [ { batch_size: 1, inputs { key: "z" value: { data_type: TYPE_FP32, dims: [3], zero_data: true } } } ]"#,
                "no input 'z'",
            ),
            (
                r#"model_warmup [ { batch_size: 1, inputs { key: "x" value: { data_type: TYPE_FP32, dims: [3], input_data_file: "../x" } } inputs { key: "t" value: { data_type: TYPE_STRING, dims: [1], zero_data: true } } } ]"#,
                "input_data_file",
            ),
        ];
        for (text, needle) in cases {
            let e = warmups(&config(text), &spec(8), None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn input_files_are_read_from_the_warmup_directory_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(WARMUP_DIR)).unwrap();
        let floats: Vec<u8> = [0.5f32, 1.0, 2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        std::fs::write(dir.path().join(WARMUP_DIR).join("x.bin"), &floats).unwrap();
        std::fs::write(dir.path().join(WARMUP_DIR).join("short.bin"), [0u8; 5]).unwrap();
        let text = |file: &str| {
            format!(
                r#"model_warmup [ {{ batch_size: 1, inputs {{ key: "x" value: {{ data_type: TYPE_FP32, dims: [3], input_data_file: "{file}" }} }} inputs {{ key: "t" value: {{ data_type: TYPE_STRING, dims: [1], zero_data: true }} }} }} ]"#
            )
        };
        let w = warmups(&config(&text("x.bin")), &spec(8), Some(dir.path())).unwrap();
        assert_eq!(&w[0].request.inputs[0].data[..], &floats[..]);
        let e = warmups(&config(&text("short.bin")), &spec(8), Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds 5 bytes"), "{e}");
    }
}
