//! Request inputs → validated raw tensors, in the model's input order.

use bytes::{BufMut, Bytes, BytesMut};
use oxserve_proto::inference::{
    InferTensorContents, ModelInferRequest, model_infer_request::InferInputTensor,
};

use super::error::fmt_shape;
use super::{BytesElements, DataType, InvalidInput, ModelSpec, Tensor, TensorSpec, element_count};

/// A request checked against its model: every input present once with the
/// right datatype, shape and size, and the outputs to return.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    /// One tensor per model input, in the model's input order.
    pub inputs: Vec<Tensor>,
    /// Indices into the model's outputs, in the order to answer them.
    pub outputs: Vec<usize>,
    /// Rows along dimension 0, when the model batches
    /// (`max_batch_size` > 0).
    pub batch_size: Option<usize>,
}

/// The batch key of a request: every input's datatype and non-batch
/// dimensions. Requests batch together only when their keys are equal.
pub(crate) fn batch_key(request: &DecodedRequest) -> Box<[u64]> {
    let mut key = Vec::with_capacity(request.inputs.len() * 4);
    for input in &request.inputs {
        key.push(input.datatype as u64);
        key.push(input.shape.len() as u64);
        key.extend(input.shape.iter().skip(1).map(|&d| d as u64));
    }
    key.into_boxed_slice()
}

/// Checks `request` against `spec` and turns its inputs into raw tensors.
///
/// Raw inputs are shared, not copied; typed `contents` are encoded once into
/// their raw form. Sizes are checked against the shape before anything is
/// allocated, so a hostile shape or BYTES prefix costs nothing.
///
/// `external` holds the raw data of inputs that do not carry it in the
/// request (read from shared memory): empty, or one entry per request
/// input. `raw_input_contents` then has one entry per other input, in
/// order, as tritonclient sends them.
pub fn decode_request(
    spec: &ModelSpec,
    request: &ModelInferRequest,
    external: &[Option<Bytes>],
) -> Result<DecodedRequest, InvalidInput> {
    let model = || spec.name.clone();
    let external_at = |position: usize| external.get(position).and_then(Option::as_ref);
    let raw = &request.raw_input_contents;
    let in_request = request.inputs.len() - external.iter().flatten().count();
    if !raw.is_empty() {
        if request.inputs.iter().any(|i| {
            i.contents
                .as_ref()
                .is_some_and(|c| !used_fields(c).is_empty())
        }) {
            return Err(InvalidInput::MixedContents { model: model() });
        }
        if raw.len() != in_request {
            return Err(InvalidInput::RawCountMismatch {
                model: model(),
                inputs: in_request,
                raw: raw.len(),
            });
        }
    }

    let mut raw_blobs = raw.iter();
    let mut slots: Vec<Option<Tensor>> = vec![None; spec.inputs.len()];
    for (position, input) in request.inputs.iter().enumerate() {
        let Some(index) = spec.input_index(&input.name) else {
            return Err(InvalidInput::UnknownInput {
                model: model(),
                input: input.name.clone(),
                expected: list_names(&spec.inputs),
            });
        };
        if slots[index].is_some() {
            return Err(InvalidInput::DuplicateInput {
                model: model(),
                input: input.name.clone(),
            });
        }
        let raw_data = match external_at(position) {
            Some(data) => Some(data),
            None => raw_blobs.next(),
        };
        let tensor = decode_input(spec, &spec.inputs[index], input, raw_data)?;
        if spec.utf8_inputs.contains(&index) {
            check_utf8(spec, &tensor)?;
        }
        slots[index] = Some(tensor);
    }

    let missing: Vec<&str> = spec
        .inputs
        .iter()
        .zip(&slots)
        .filter(|(_, slot)| slot.is_none())
        .map(|(t, _)| t.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(InvalidInput::MissingInputs {
            model: model(),
            expected: spec.inputs.len(),
            missing: quote_list(missing),
        });
    }
    // Every slot is filled: missing inputs were rejected just above.
    let inputs: Vec<Tensor> = slots.into_iter().flatten().collect();

    let batch_size = if spec.max_batch_size > 0 {
        let first = &inputs[0];
        let first_batch = first.shape[0];
        if let Some(other) = inputs.iter().find(|t| t.shape[0] != first_batch) {
            return Err(InvalidInput::BatchMismatch {
                model: model(),
                first: first.name.clone(),
                first_batch,
                input: other.name.clone(),
                batch: other.shape[0],
            });
        }
        if first_batch > spec.max_request_rows {
            return Err(InvalidInput::BatchTooLarge {
                model: model(),
                batch: first_batch,
                max: spec.max_request_rows,
            });
        }
        Some(first_batch)
    } else {
        None
    };

    let outputs = if request.outputs.is_empty() {
        (0..spec.outputs.len()).collect()
    } else {
        let mut chosen = Vec::with_capacity(request.outputs.len());
        for wanted in &request.outputs {
            let Some(index) = spec.output_index(&wanted.name) else {
                return Err(InvalidInput::UnknownOutput {
                    model: model(),
                    output: wanted.name.clone(),
                    expected: list_names(&spec.outputs),
                });
            };
            if chosen.contains(&index) {
                return Err(InvalidInput::DuplicateOutput {
                    model: model(),
                    output: wanted.name.clone(),
                });
            }
            chosen.push(index);
        }
        chosen
    };

    Ok(DecodedRequest {
        inputs,
        outputs,
        batch_size,
    })
}

fn decode_input(
    model: &ModelSpec,
    spec: &TensorSpec,
    input: &InferInputTensor,
    raw: Option<&Bytes>,
) -> Result<Tensor, InvalidInput> {
    let model_name = || model.name.clone();
    let name = || input.name.clone();
    let datatype =
        DataType::parse(&input.datatype).ok_or_else(|| InvalidInput::UnknownDatatype {
            model: model_name(),
            input: name(),
            datatype: input.datatype.clone(),
        })?;
    if datatype != spec.datatype {
        return Err(InvalidInput::DatatypeMismatch {
            model: model_name(),
            input: name(),
            got: input.datatype.clone(),
            expected: spec.datatype.as_str(),
        });
    }
    if input.shape.iter().any(|&d| d < 0) {
        return Err(InvalidInput::NegativeDim {
            model: model_name(),
            input: name(),
            shape: fmt_shape(&input.shape),
        });
    }
    if !spec.accepts_shape(&input.shape) {
        return Err(InvalidInput::ShapeMismatch {
            model: model_name(),
            input: name(),
            got: fmt_shape(&input.shape),
            expected: fmt_shape(&spec.dims),
        });
    }
    let count = element_count(&input.shape).ok_or_else(|| InvalidInput::ShapeOverflow {
        model: model_name(),
        input: name(),
        shape: fmt_shape(&input.shape),
    })?;
    // Dimensions are non-negative and their product fits a usize, so each fits.
    let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();

    let data = match (raw, &input.contents) {
        (Some(raw), _) => {
            check_raw(model, input, datatype, count, raw)?;
            raw.clone()
        }
        (None, Some(contents)) => encode_contents(model, input, datatype, count, contents)?,
        (None, None) => {
            return Err(InvalidInput::NoData {
                model: model_name(),
                input: name(),
                field: datatype.contents_field().unwrap_or("(raw only)"),
            });
        }
    };
    Ok(Tensor {
        name: input.name.clone(),
        datatype,
        shape,
        data,
    })
}

fn check_raw(
    model: &ModelSpec,
    input: &InferInputTensor,
    datatype: DataType,
    count: usize,
    raw: &[u8],
) -> Result<(), InvalidInput> {
    match datatype.element_size() {
        Some(size) => {
            // An overflowing product can never equal a real message length.
            let expected = count.checked_mul(size);
            if expected != Some(raw.len()) {
                return Err(InvalidInput::ByteSizeMismatch {
                    model: model.name.clone(),
                    input: input.name.clone(),
                    datatype: datatype.as_str(),
                    shape: fmt_shape(&input.shape),
                    expected: expected.unwrap_or(usize::MAX),
                    got: raw.len(),
                });
            }
        }
        None => {
            let got =
                BytesElements::count_all(raw).map_err(|detail| InvalidInput::MalformedBytes {
                    model: model.name.clone(),
                    input: input.name.clone(),
                    detail,
                })?;
            if got != count {
                return Err(InvalidInput::BytesCountMismatch {
                    model: model.name.clone(),
                    input: input.name.clone(),
                    shape: fmt_shape(&input.shape),
                    expected: count,
                    got,
                });
            }
        }
    }
    Ok(())
}

/// Checks that every element of a validated BYTES tensor is UTF-8 text.
fn check_utf8(model: &ModelSpec, tensor: &Tensor) -> Result<(), InvalidInput> {
    for (element, bytes) in BytesElements::new(&tensor.data).enumerate() {
        // The stream was validated by `decode_input`: no element fails.
        let Ok(bytes) = bytes else { break };
        if let Err(e) = std::str::from_utf8(bytes) {
            return Err(InvalidInput::NotUtf8 {
                model: model.name.clone(),
                input: tensor.name.clone(),
                element,
                detail: e.to_string(),
            });
        }
    }
    Ok(())
}

/// Names and lengths of the non-empty typed fields.
fn used_fields(c: &InferTensorContents) -> Vec<(&'static str, usize)> {
    [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ]
    .into_iter()
    .filter(|&(_, len)| len > 0)
    .collect()
}

fn encode_contents(
    model: &ModelSpec,
    input: &InferInputTensor,
    datatype: DataType,
    count: usize,
    c: &InferTensorContents,
) -> Result<Bytes, InvalidInput> {
    let expected_field = datatype.contents_field();
    let used = used_fields(c);
    if let Some(&(got, _)) = used
        .iter()
        .find(|(field, _)| Some(*field) != expected_field)
    {
        return Err(InvalidInput::WrongContentsField {
            model: model.name.clone(),
            input: input.name.clone(),
            datatype: datatype.as_str(),
            expected: match expected_field {
                Some(field) => format!("in contents.{field}"),
                None => "in raw_input_contents".to_string(),
            },
            got,
        });
    }
    let Some(field) = expected_field else {
        // FP16/BF16 with no typed data at all: nothing was sent for it.
        return Err(InvalidInput::NoData {
            model: model.name.clone(),
            input: input.name.clone(),
            field: "(raw only)",
        });
    };
    // Every used field is the expected one here, so at most one is used.
    let len = used.first().map_or(0, |&(_, len)| len);
    if len != count {
        return Err(InvalidInput::ContentsCountMismatch {
            model: model.name.clone(),
            input: input.name.clone(),
            field,
            shape: fmt_shape(&input.shape),
            expected: count,
            got: len,
        });
    }
    let out_of_range = |index: usize, value: i64| InvalidInput::ValueOutOfRange {
        model: model.name.clone(),
        input: input.name.clone(),
        field,
        index,
        value,
        datatype: datatype.as_str(),
    };
    // `count` elements of at most 8 bytes each: bounded by the message the
    // client already sent, so this allocation is safe.
    let mut out = BytesMut::with_capacity(count * datatype.element_size().unwrap_or(4));
    match datatype {
        DataType::Bool => c.bool_contents.iter().for_each(|&b| out.put_u8(b as u8)),
        DataType::Uint8 => narrow(
            &c.uint_contents,
            |v| u8::try_from(v).ok(),
            &mut out,
            |o, v| o.put_u8(v),
        )
        .map_err(|(i, v)| out_of_range(i, v as i64))?,
        DataType::Uint16 => narrow(
            &c.uint_contents,
            |v| u16::try_from(v).ok(),
            &mut out,
            |o, v| o.put_u16_le(v),
        )
        .map_err(|(i, v)| out_of_range(i, v as i64))?,
        DataType::Uint32 => c.uint_contents.iter().for_each(|&v| out.put_u32_le(v)),
        DataType::Uint64 => c.uint64_contents.iter().for_each(|&v| out.put_u64_le(v)),
        DataType::Int8 => narrow(
            &c.int_contents,
            |v| i8::try_from(v).ok(),
            &mut out,
            |o, v| o.put_i8(v),
        )
        .map_err(|(i, v)| out_of_range(i, v as i64))?,
        DataType::Int16 => narrow(
            &c.int_contents,
            |v| i16::try_from(v).ok(),
            &mut out,
            |o, v| o.put_i16_le(v),
        )
        .map_err(|(i, v)| out_of_range(i, v as i64))?,
        DataType::Int32 => c.int_contents.iter().for_each(|&v| out.put_i32_le(v)),
        DataType::Int64 => c.int64_contents.iter().for_each(|&v| out.put_i64_le(v)),
        DataType::Fp32 => c.fp32_contents.iter().for_each(|&v| out.put_f32_le(v)),
        DataType::Fp64 => c.fp64_contents.iter().for_each(|&v| out.put_f64_le(v)),
        DataType::Bytes => {
            for element in &c.bytes_contents {
                // An element of a message bounded by the 2 GiB message
                // limit always fits its 4-byte length prefix.
                out.put_u32_le(element.len() as u32);
                out.put_slice(element);
            }
        }
        // Raw-only types returned above for want of a typed field.
        DataType::Fp16 | DataType::Bf16 => unreachable!("raw-only datatypes have no typed field"),
    }
    Ok(out.freeze())
}

/// Writes each value narrowed to `N`, or returns the first that does not fit.
fn narrow<W: Copy, N>(
    values: &[W],
    fit: impl Fn(W) -> Option<N>,
    out: &mut BytesMut,
    put: impl Fn(&mut BytesMut, N),
) -> Result<(), (usize, W)> {
    for (i, &v) in values.iter().enumerate() {
        put(out, fit(v).ok_or((i, v))?);
    }
    Ok(())
}

fn list_names(specs: &[TensorSpec]) -> String {
    quote_list(specs.iter().map(|t| t.name.as_str()))
}

fn quote_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(|n| format!("'{n}'")).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod utf8_tests;
