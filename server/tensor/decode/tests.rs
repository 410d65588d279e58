use bytes::Bytes;

use super::*;
use oxserve_proto::inference::model_infer_request::InferRequestedOutputTensor;

fn spec(inputs: &[(&str, DataType, &[i64])], outputs: &[(&str, DataType, &[i64])]) -> ModelSpec {
    let t = |(name, datatype, dims): &(&str, DataType, &[i64])| TensorSpec {
        name: name.to_string(),
        datatype: *datatype,
        dims: dims.to_vec(),
    };
    ModelSpec {
        name: "m".into(),
        inputs: inputs.iter().map(t).collect(),
        outputs: outputs.iter().map(t).collect(),
        max_batch_size: 0,
        max_request_rows: usize::MAX,
        utf8_inputs: Vec::new(),
    }
}

fn add_sub() -> ModelSpec {
    let mut m = spec(
        &[
            ("a", DataType::Fp32, &[-1, 2]),
            ("b", DataType::Fp32, &[-1, 2]),
        ],
        &[
            ("sum", DataType::Fp32, &[-1, 2]),
            ("diff", DataType::Fp32, &[-1, 2]),
        ],
    );
    m.max_batch_size = 4;
    m.max_request_rows = 4;
    m
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn typed(mut t: InferInputTensor, contents: InferTensorContents) -> InferInputTensor {
    t.contents = Some(contents);
    t
}

fn typed_request(inputs: Vec<InferInputTensor>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs,
        ..Default::default()
    }
}

fn raw_request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs,
        raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
        ..Default::default()
    }
}

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bytes_stream(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

fn err(spec: &ModelSpec, request: &ModelInferRequest) -> InvalidInput {
    decode_request(spec, request, &[]).expect_err("request should be rejected")
}

#[test]
fn raw_inputs_are_reordered_to_model_order_and_shared_not_copied() {
    let request = raw_request(
        vec![input("b", "FP32", &[1, 2]), input("a", "FP32", &[1, 2])],
        vec![f32s(&[3.0, 4.0]), f32s(&[1.0, 2.0])],
    );
    let decoded = decode_request(&add_sub(), &request, &[]).unwrap();
    assert_eq!(decoded.inputs[0].name, "a");
    assert_eq!(decoded.inputs[0].data, Bytes::from(f32s(&[1.0, 2.0])));
    assert_eq!(decoded.inputs[1].name, "b");
    assert_eq!(
        decoded.inputs[0].data.as_ptr(),
        request.raw_input_contents[1].as_ptr()
    );
    assert_eq!(decoded.outputs, vec![0, 1]);
    assert_eq!(decoded.batch_size, Some(1));
}

#[test]
fn external_data_takes_its_inputs_place_and_raw_contents_fill_the_others() {
    // Input "b" comes from shared memory: the one raw blob is "a"'s.
    let request = raw_request(
        vec![input("b", "FP32", &[1, 2]), input("a", "FP32", &[1, 2])],
        vec![f32s(&[1.0, 2.0])],
    );
    let external = [Some(Bytes::from(f32s(&[3.0, 4.0]))), None];
    let decoded = decode_request(&add_sub(), &request, &external).unwrap();
    assert_eq!(decoded.inputs[0].data, Bytes::from(f32s(&[1.0, 2.0])));
    assert_eq!(decoded.inputs[1].data, Bytes::from(f32s(&[3.0, 4.0])));
    // External data is checked against the shape like any raw data.
    let short = [Some(Bytes::from(f32s(&[3.0]))), None];
    let error = decode_request(&add_sub(), &request, &short).unwrap_err();
    assert!(
        matches!(error, InvalidInput::ByteSizeMismatch { .. }),
        "{error}"
    );
    // Raw contents for every input, shared memory besides: one too many.
    let both = raw_request(
        vec![input("b", "FP32", &[1, 2]), input("a", "FP32", &[1, 2])],
        vec![f32s(&[1.0, 2.0]), f32s(&[1.0, 2.0])],
    );
    let error = decode_request(&add_sub(), &both, &external).unwrap_err();
    assert!(
        matches!(
            error,
            InvalidInput::RawCountMismatch {
                inputs: 1,
                raw: 2,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn typed_contents_encode_to_the_same_bytes_as_raw() {
    let contents = |v: Vec<f32>| InferTensorContents {
        fp32_contents: v,
        ..Default::default()
    };
    let request = typed_request(vec![
        typed(input("a", "FP32", &[1, 2]), contents(vec![1.0, 2.0])),
        typed(input("b", "FP32", &[1, 2]), contents(vec![3.0, 4.0])),
    ]);
    let decoded = decode_request(&add_sub(), &request, &[]).unwrap();
    assert_eq!(decoded.inputs[0].data, Bytes::from(f32s(&[1.0, 2.0])));
    assert_eq!(decoded.inputs[1].data, Bytes::from(f32s(&[3.0, 4.0])));
}

#[test]
fn every_typed_field_encodes_little_endian() {
    let cases: Vec<(DataType, InferTensorContents, Vec<u8>)> = vec![
        (
            DataType::Bool,
            InferTensorContents {
                bool_contents: vec![true, false],
                ..Default::default()
            },
            vec![1, 0],
        ),
        (
            DataType::Uint8,
            InferTensorContents {
                uint_contents: vec![1, 255],
                ..Default::default()
            },
            vec![1, 255],
        ),
        (
            DataType::Uint16,
            InferTensorContents {
                uint_contents: vec![1, 65535],
                ..Default::default()
            },
            vec![1, 0, 255, 255],
        ),
        (
            DataType::Uint32,
            InferTensorContents {
                uint_contents: vec![1, 2],
                ..Default::default()
            },
            [1u32.to_le_bytes(), 2u32.to_le_bytes()].concat(),
        ),
        (
            DataType::Uint64,
            InferTensorContents {
                uint64_contents: vec![1, u64::MAX],
                ..Default::default()
            },
            [1u64.to_le_bytes(), u64::MAX.to_le_bytes()].concat(),
        ),
        (
            DataType::Int8,
            InferTensorContents {
                int_contents: vec![-1, 127],
                ..Default::default()
            },
            vec![255, 127],
        ),
        (
            DataType::Int16,
            InferTensorContents {
                int_contents: vec![-2, 3],
                ..Default::default()
            },
            [(-2i16).to_le_bytes(), 3i16.to_le_bytes()].concat(),
        ),
        (
            DataType::Int32,
            InferTensorContents {
                int_contents: vec![-2, 3],
                ..Default::default()
            },
            [(-2i32).to_le_bytes(), 3i32.to_le_bytes()].concat(),
        ),
        (
            DataType::Int64,
            InferTensorContents {
                int64_contents: vec![-2, 3],
                ..Default::default()
            },
            [(-2i64).to_le_bytes(), 3i64.to_le_bytes()].concat(),
        ),
        (
            DataType::Fp64,
            InferTensorContents {
                fp64_contents: vec![0.5, -1.0],
                ..Default::default()
            },
            [0.5f64.to_le_bytes(), (-1.0f64).to_le_bytes()].concat(),
        ),
        (
            DataType::Bytes,
            InferTensorContents {
                bytes_contents: vec![Bytes::from_static(b""), Bytes::from_static(b"\xff\x00")],
                ..Default::default()
            },
            bytes_stream(&[b"", b"\xff\x00"]),
        ),
    ];
    for (datatype, contents, expected) in cases {
        let m = spec(&[("x", datatype, &[-1])], &[("y", datatype, &[-1])]);
        let request = ModelInferRequest {
            inputs: vec![typed(input("x", datatype.as_str(), &[2]), contents)],
            ..Default::default()
        };
        let decoded =
            decode_request(&m, &request, &[]).unwrap_or_else(|e| panic!("{datatype}: {e}"));
        assert_eq!(decoded.inputs[0].data, Bytes::from(expected), "{datatype}");
    }
}

#[test]
fn narrow_types_reject_values_that_do_not_fit() {
    let m = spec(
        &[("x", DataType::Uint8, &[-1])],
        &[("y", DataType::Uint8, &[-1])],
    );
    let request = ModelInferRequest {
        inputs: vec![typed(
            input("x", "UINT8", &[2]),
            InferTensorContents {
                uint_contents: vec![1, 300],
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    let e = err(&m, &request);
    assert!(
        matches!(
            e,
            InvalidInput::ValueOutOfRange {
                index: 1,
                value: 300,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn mixing_contents_and_raw_is_rejected() {
    let mut request = raw_request(
        vec![input("a", "FP32", &[1, 2]), input("b", "FP32", &[1, 2])],
        vec![f32s(&[1.0, 2.0]), f32s(&[1.0, 2.0])],
    );
    request.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![1.0, 2.0],
        ..Default::default()
    });
    assert!(matches!(
        err(&add_sub(), &request),
        InvalidInput::MixedContents { .. }
    ));
}

#[test]
fn raw_blob_count_must_match_inputs() {
    let request = raw_request(
        vec![input("a", "FP32", &[1, 2]), input("b", "FP32", &[1, 2])],
        vec![f32s(&[1.0, 2.0])],
    );
    assert!(matches!(
        err(&add_sub(), &request),
        InvalidInput::RawCountMismatch {
            inputs: 2,
            raw: 1,
            ..
        }
    ));
}

#[test]
fn unknown_duplicate_and_missing_inputs_are_named() {
    let request = raw_request(vec![input("c", "FP32", &[1, 2])], vec![f32s(&[1.0, 2.0])]);
    let e = err(&add_sub(), &request).to_string();
    assert!(e.contains("'c'") && e.contains("'a', 'b'"), "{e}");

    let request = raw_request(
        vec![input("a", "FP32", &[1, 2]), input("a", "FP32", &[1, 2])],
        vec![f32s(&[1.0, 2.0]), f32s(&[1.0, 2.0])],
    );
    assert!(matches!(
        err(&add_sub(), &request),
        InvalidInput::DuplicateInput { .. }
    ));

    let request = raw_request(vec![input("a", "FP32", &[1, 2])], vec![f32s(&[1.0, 2.0])]);
    let e = err(&add_sub(), &request);
    assert_eq!(
        e.to_string(),
        "model 'm' expects 2 inputs, but the request is missing 'b'"
    );
}

#[test]
fn datatype_errors_say_what_was_sent_and_expected() {
    let request = raw_request(
        vec![input("a", "FP64", &[1, 2]), input("b", "FP32", &[1, 2])],
        vec![vec![0; 16], f32s(&[1.0, 2.0])],
    );
    assert_eq!(
        err(&add_sub(), &request).to_string(),
        "input 'a': data-type is 'FP64', but model 'm' expects 'FP32'"
    );

    let request = raw_request(
        vec![input("a", "fp32", &[1, 2]), input("b", "FP32", &[1, 2])],
        vec![f32s(&[1.0, 2.0]), f32s(&[1.0, 2.0])],
    );
    assert!(matches!(
        err(&add_sub(), &request),
        InvalidInput::UnknownDatatype { .. }
    ));
}

#[test]
fn shapes_are_checked_before_sizes() {
    let bad = |shape: &[i64]| {
        raw_request(
            vec![input("a", "FP32", shape), input("b", "FP32", &[1, 2])],
            vec![f32s(&[1.0, 2.0]), f32s(&[1.0, 2.0])],
        )
    };
    assert!(matches!(
        err(&add_sub(), &bad(&[-1, 2])),
        InvalidInput::NegativeDim { .. }
    ));
    assert!(matches!(
        err(&add_sub(), &bad(&[1, 3])),
        InvalidInput::ShapeMismatch { .. }
    ));
    assert!(matches!(
        err(&add_sub(), &bad(&[2])),
        InvalidInput::ShapeMismatch { .. }
    ));
    // The product overflows: rejected without allocating anything.
    let any = spec(
        &[("x", DataType::Fp32, &[-1, -1])],
        &[("y", DataType::Fp32, &[-1, -1])],
    );
    let request = raw_request(
        vec![input("x", "FP32", &[i64::MAX, i64::MAX])],
        vec![f32s(&[1.0])],
    );
    assert!(matches!(
        err(&any, &request),
        InvalidInput::ShapeOverflow { .. }
    ));
}

#[test]
fn raw_size_mismatch_reports_expected_and_received() {
    let request = raw_request(
        vec![input("a", "FP32", &[2, 2]), input("b", "FP32", &[2, 2])],
        vec![f32s(&[1.0, 2.0]), f32s(&[1.0, 2.0, 3.0, 4.0])],
    );
    let e = err(&add_sub(), &request).to_string();
    assert!(e.contains("Expected 16 bytes, got 8"), "{e}");
    // A huge declared size against a small blob is just a mismatch.
    let request = raw_request(
        vec![
            input("a", "FP32", &[1 << 40, 2]),
            input("b", "FP32", &[1 << 40, 2]),
        ],
        vec![f32s(&[1.0]), f32s(&[1.0])],
    );
    assert!(matches!(
        err(&add_sub(), &request),
        InvalidInput::ByteSizeMismatch { .. }
    ));
}

#[test]
fn inputs_must_agree_on_the_batch_size() {
    let request = raw_request(
        vec![input("a", "FP32", &[1, 2]), input("b", "FP32", &[2, 2])],
        vec![f32s(&[1.0, 2.0]), f32s(&[1.0, 2.0, 3.0, 4.0])],
    );
    let e = err(&add_sub(), &request).to_string();
    assert!(e.contains("'a' has 1 rows, 'b' has 2"), "{e}");
}

#[test]
fn batches_above_the_maximum_are_rejected() {
    let rows = |n: usize| f32s(&vec![0.5; 2 * n]);
    let request = raw_request(
        vec![input("a", "FP32", &[5, 2]), input("b", "FP32", &[5, 2])],
        vec![rows(5), rows(5)],
    );
    let e = err(&add_sub(), &request).to_string();
    assert!(
        e.contains("batch of 5 rows") && e.contains("max_batch_size of 4"),
        "{e}"
    );
    let request = raw_request(
        vec![input("a", "FP32", &[4, 2]), input("b", "FP32", &[4, 2])],
        vec![rows(4), rows(4)],
    );
    assert_eq!(
        decode_request(&add_sub(), &request, &[])
            .unwrap()
            .batch_size,
        Some(4)
    );
    // When larger requests run in chunks, any number of rows is taken.
    let mut chunked = add_sub();
    chunked.max_request_rows = usize::MAX;
    let request = raw_request(
        vec![input("a", "FP32", &[9, 2]), input("b", "FP32", &[9, 2])],
        vec![rows(9), rows(9)],
    );
    assert_eq!(
        decode_request(&chunked, &request, &[]).unwrap().batch_size,
        Some(9)
    );
}

fn bytes_model() -> ModelSpec {
    spec(
        &[("s", DataType::Bytes, &[-1])],
        &[("t", DataType::Bytes, &[-1])],
    )
}

#[test]
fn bytes_round_trip_empty_and_non_utf8_elements() {
    let stream = bytes_stream(&[b"", b"\xff\xfe\x00", b"hello"]);
    let request = raw_request(vec![input("s", "BYTES", &[3])], vec![stream.clone()]);
    let decoded = decode_request(&bytes_model(), &request, &[]).unwrap();
    assert_eq!(decoded.inputs[0].data, Bytes::from(stream));
}

#[test]
fn hostile_bytes_streams_are_rejected() {
    let check = |shape: &[i64], raw: Vec<u8>| {
        err(
            &bytes_model(),
            &raw_request(vec![input("s", "BYTES", shape)], vec![raw]),
        )
    };
    assert!(matches!(
        check(&[1], vec![5, 0]),
        InvalidInput::MalformedBytes { .. }
    ));
    // A prefix claiming 4 GiB with 3 bytes behind it.
    let e = check(&[1], vec![255, 255, 255, 255, 1, 2, 3]);
    assert!(
        e.to_string()
            .contains("declares 4294967295 bytes, but only 3 remain"),
        "{e}"
    );
    assert!(matches!(
        check(&[3], bytes_stream(&[b"a", b"b"])),
        InvalidInput::BytesCountMismatch {
            expected: 3,
            got: 2,
            ..
        }
    ));
    // An enormous element count with a tiny payload costs nothing.
    assert!(matches!(
        check(&[1 << 50], bytes_stream(&[b"a"])),
        InvalidInput::BytesCountMismatch { .. }
    ));
}

#[test]
fn typed_contents_must_use_the_datatypes_field() {
    let fp64 = InferTensorContents {
        fp64_contents: vec![1.0, 2.0],
        ..Default::default()
    };
    let fp32 = InferTensorContents {
        fp32_contents: vec![1.0, 2.0],
        ..Default::default()
    };
    let request = typed_request(vec![
        typed(input("a", "FP32", &[1, 2]), fp64),
        typed(input("b", "FP32", &[1, 2]), fp32.clone()),
    ]);
    let e = err(&add_sub(), &request).to_string();
    assert!(
        e.contains("contents.fp32_contents") && e.contains("contents.fp64_contents"),
        "{e}"
    );

    let half = spec(
        &[("h", DataType::Fp16, &[-1])],
        &[("o", DataType::Fp16, &[-1])],
    );
    let request = typed_request(vec![typed(input("h", "FP16", &[2]), fp32)]);
    assert!(
        err(&half, &request)
            .to_string()
            .contains("in raw_input_contents")
    );
}

#[test]
fn typed_count_must_match_the_shape() {
    let contents = |v: Vec<f32>| InferTensorContents {
        fp32_contents: v,
        ..Default::default()
    };
    let request = typed_request(vec![
        typed(input("a", "FP32", &[1, 2]), contents(vec![1.0])),
        typed(input("b", "FP32", &[1, 2]), contents(vec![1.0, 2.0])),
    ]);
    assert!(matches!(
        err(&add_sub(), &request),
        InvalidInput::ContentsCountMismatch {
            expected: 2,
            got: 1,
            ..
        }
    ));
}

#[test]
fn an_input_without_data_is_rejected() {
    let request = ModelInferRequest {
        inputs: vec![input("a", "FP32", &[1, 2]), input("b", "FP32", &[1, 2])],
        ..Default::default()
    };
    let e = err(&add_sub(), &request).to_string();
    assert!(e.contains("'a'") && e.contains("has no data"), "{e}");
}

#[test]
fn requested_outputs_keep_their_order_and_must_exist_once() {
    let mut request = raw_request(
        vec![input("a", "FP32", &[1, 2]), input("b", "FP32", &[1, 2])],
        vec![f32s(&[1.0, 2.0]), f32s(&[1.0, 2.0])],
    );
    let out = |name: &str| InferRequestedOutputTensor {
        name: name.into(),
        ..Default::default()
    };
    request.outputs = vec![out("diff")];
    assert_eq!(
        decode_request(&add_sub(), &request, &[]).unwrap().outputs,
        vec![1]
    );
    request.outputs = vec![out("diff"), out("sum")];
    assert_eq!(
        decode_request(&add_sub(), &request, &[]).unwrap().outputs,
        vec![1, 0]
    );
    request.outputs = vec![out("nope")];
    assert!(err(&add_sub(), &request).to_string().contains("'nope'"));
    request.outputs = vec![out("sum"), out("sum")];
    assert!(matches!(
        err(&add_sub(), &request),
        InvalidInput::DuplicateOutput { .. }
    ));
}
