use bytes::Bytes;

use super::*;
use crate::codec::{encode, encode_bytes};

fn tensor(name: &str, datatype: &str, shape: &[i64]) -> InferOutputTensor {
    InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

/// A response with one output sent raw.
fn raw_response(datatype: &str, shape: &[i64], raw: Vec<u8>) -> InferResponse {
    InferResponse::from(pb::ModelInferResponse {
        outputs: vec![tensor("y", datatype, shape)],
        raw_output_contents: vec![raw.into()],
        ..Default::default()
    })
}

/// A response with one output sent as typed contents.
fn typed_response(datatype: &str, shape: &[i64], contents: InferTensorContents) -> InferResponse {
    let mut output = tensor("y", datatype, shape);
    output.contents = Some(contents);
    InferResponse::from(pb::ModelInferResponse {
        outputs: vec![output],
        ..Default::default()
    })
}

fn y(response: &InferResponse) -> Output<'_> {
    response.output("y").expect("test response has output y")
}

fn assert_decode_error<T: std::fmt::Debug>(result: Result<T>, needle: &str) {
    match result {
        Err(Error::Decode(message)) => {
            assert!(message.contains(needle), "'{message}' lacks '{needle}'")
        }
        other => panic!("expected a decode error containing '{needle}', got {other:?}"),
    }
}

#[test]
fn accessors_expose_the_response() {
    let response = InferResponse::from(pb::ModelInferResponse {
        model_name: "mlp".into(),
        model_version: "3".into(),
        id: "req-1".into(),
        outputs: vec![tensor("a", "FP32", &[1, 2]), tensor("b", "BYTES", &[1])],
        raw_output_contents: vec![
            encode(&[1.0f32, 2.0]).into(),
            encode_bytes(&["hi"]).unwrap().into(),
        ],
        ..Default::default()
    });
    assert_eq!(response.id(), "req-1");
    assert_eq!(response.model_name(), "mlp");
    assert_eq!(response.model_version(), "3");
    assert_eq!(response.outputs().len(), 2);
    let names: Vec<_> = response.outputs().map(|o| o.name()).collect();
    assert_eq!(names, ["a", "b"]);
    let b = response.output("b").unwrap();
    assert_eq!((b.datatype(), b.shape()), ("BYTES", &[1][..]));
    assert_eq!(b.dtype().unwrap(), DataType::Bytes);
    assert_eq!(b.as_strings().unwrap(), ["hi"]);
    assert_eq!(response.output("a").unwrap().as_f32().unwrap(), [1.0, 2.0]);
    assert!(response.output("c").is_none());
    assert_eq!(response.clone().into_proto(), *response.as_proto());
}

#[test]
fn every_fixed_datatype_reads_from_raw() {
    let r = raw_response("BOOL", &[2], vec![1, 0]);
    assert_eq!(y(&r).as_bool().unwrap(), [true, false]);
    let r = raw_response("UINT8", &[2], encode(&[1u8, 2]));
    assert_eq!(y(&r).as_u8().unwrap(), [1, 2]);
    let r = raw_response("UINT16", &[1], encode(&[65535u16]));
    assert_eq!(y(&r).as_u16().unwrap(), [65535]);
    let r = raw_response("UINT32", &[1], encode(&[u32::MAX]));
    assert_eq!(y(&r).as_u32().unwrap(), [u32::MAX]);
    let r = raw_response("UINT64", &[1], encode(&[u64::MAX]));
    assert_eq!(y(&r).as_u64().unwrap(), [u64::MAX]);
    let r = raw_response("INT8", &[1], encode(&[-8i8]));
    assert_eq!(y(&r).as_i8().unwrap(), [-8]);
    let r = raw_response("INT16", &[1], encode(&[-16i16]));
    assert_eq!(y(&r).as_i16().unwrap(), [-16]);
    let r = raw_response("INT32", &[1], encode(&[-32i32]));
    assert_eq!(y(&r).as_i32().unwrap(), [-32]);
    let r = raw_response("INT64", &[1], encode(&[-64i64]));
    assert_eq!(y(&r).as_i64().unwrap(), [-64]);
    let r = raw_response("FP32", &[2, 2], encode(&[1.0f32, 2.0, 3.0, 4.0]));
    assert_eq!(y(&r).as_f32().unwrap(), [1.0, 2.0, 3.0, 4.0]);
    let r = raw_response("FP64", &[1], encode(&[0.25f64]));
    assert_eq!(y(&r).as_f64().unwrap(), [0.25]);
}

#[test]
fn half_precision_outputs_are_read_raw() {
    let r = raw_response("FP16", &[2], vec![0x00, 0x3c, 0x00, 0xc0]);
    assert_eq!(y(&r).dtype().unwrap(), DataType::Fp16);
    assert_eq!(y(&r).raw(), Some(&[0x00, 0x3c, 0x00, 0xc0][..]));
    assert!(matches!(y(&r).as_f32(), Err(Error::Mismatch(_))));
}

#[test]
fn every_type_reads_from_typed_contents() {
    let c = |f: fn(&mut InferTensorContents)| {
        let mut contents = InferTensorContents::default();
        f(&mut contents);
        contents
    };
    let r = typed_response("BOOL", &[2], c(|c| c.bool_contents = vec![true, false]));
    assert_eq!(y(&r).as_bool().unwrap(), [true, false]);
    let r = typed_response("UINT8", &[1], c(|c| c.uint_contents = vec![200]));
    assert_eq!(y(&r).as_u8().unwrap(), [200]);
    let r = typed_response("UINT16", &[1], c(|c| c.uint_contents = vec![60000]));
    assert_eq!(y(&r).as_u16().unwrap(), [60000]);
    let r = typed_response("UINT32", &[1], c(|c| c.uint_contents = vec![u32::MAX]));
    assert_eq!(y(&r).as_u32().unwrap(), [u32::MAX]);
    let r = typed_response("UINT64", &[1], c(|c| c.uint64_contents = vec![u64::MAX]));
    assert_eq!(y(&r).as_u64().unwrap(), [u64::MAX]);
    let r = typed_response("INT8", &[1], c(|c| c.int_contents = vec![-100]));
    assert_eq!(y(&r).as_i8().unwrap(), [-100]);
    let r = typed_response("INT16", &[1], c(|c| c.int_contents = vec![-30000]));
    assert_eq!(y(&r).as_i16().unwrap(), [-30000]);
    let r = typed_response("INT32", &[1], c(|c| c.int_contents = vec![i32::MIN]));
    assert_eq!(y(&r).as_i32().unwrap(), [i32::MIN]);
    let r = typed_response("INT64", &[1], c(|c| c.int64_contents = vec![i64::MAX]));
    assert_eq!(y(&r).as_i64().unwrap(), [i64::MAX]);
    let r = typed_response("FP32", &[1], c(|c| c.fp32_contents = vec![1.5]));
    assert_eq!(y(&r).as_f32().unwrap(), [1.5]);
    let r = typed_response("FP64", &[1], c(|c| c.fp64_contents = vec![2.5]));
    assert_eq!(y(&r).as_f64().unwrap(), [2.5]);
    let r = typed_response(
        "BYTES",
        &[2],
        c(|c| c.bytes_contents = vec![Bytes::from_static(b"a"), Bytes::new()]),
    );
    assert_eq!(y(&r).as_strings().unwrap(), ["a", ""]);
    assert!(y(&r).raw().is_none());
}

#[test]
fn typed_contents_out_of_range_are_decode_errors() {
    let contents = InferTensorContents {
        int_contents: vec![1, 300],
        ..Default::default()
    };
    let r = typed_response("INT8", &[2], contents);
    assert_decode_error(y(&r).as_i8(), "value 300 is out of range for INT8");
}

#[test]
fn typed_contents_with_the_wrong_count_are_decode_errors() {
    let contents = InferTensorContents {
        fp32_contents: vec![1.0],
        ..Default::default()
    };
    let r = typed_response("FP32", &[2], contents.clone());
    assert_decode_error(y(&r).as_f32(), "shape holds 2 elements, contents hold 1");
    // Contents in a field other than the datatype's count as missing.
    let r = typed_response("FP64", &[1], contents);
    assert_decode_error(y(&r).as_f64(), "contents hold 0");
}

#[test]
fn raw_takes_precedence_over_contents() {
    let mut r = raw_response("INT32", &[1], encode(&[7i32])).into_proto();
    r.outputs[0].contents = Some(InferTensorContents {
        int_contents: vec![8],
        ..Default::default()
    });
    assert_eq!(y(&r.into()).as_i32().unwrap(), [7]);
}

#[test]
fn reading_the_wrong_datatype_is_a_mismatch() {
    let r = raw_response("FP32", &[1], encode(&[1.0f32]));
    let err = y(&r).as_f64().unwrap_err();
    assert!(
        matches!(&err, Error::Mismatch(m) if m == "output 'y' is FP32, cannot read it as FP64"),
        "{err}"
    );
    assert!(matches!(y(&r).as_bytes(), Err(Error::Mismatch(_))));
    assert!(matches!(y(&r).as_strings(), Err(Error::Mismatch(_))));
    let r = raw_response("BYTES", &[1], encode_bytes(&["a"]).unwrap());
    assert!(matches!(y(&r).as_u8(), Err(Error::Mismatch(_))));
}

#[test]
fn unknown_datatypes_are_decode_errors() {
    let r = raw_response("FLOAT", &[1], encode(&[1.0f32]));
    assert_decode_error(y(&r).dtype(), "unknown datatype 'FLOAT'");
    assert_decode_error(y(&r).as_f32(), "unknown datatype 'FLOAT'");
}

#[test]
fn raw_length_must_match_the_shape() {
    let r = raw_response("FP32", &[3], encode(&[1.0f32, 2.0]));
    assert_decode_error(
        y(&r).as_f32(),
        "output 'y': 3 FP32 elements need 12 bytes, got 8",
    );
    let r = raw_response("INT64", &[1], vec![0; 7]);
    assert_decode_error(y(&r).as_i64(), "need 8 bytes, got 7");
}

#[test]
fn malformed_shapes_are_decode_errors_not_allocations() {
    for shape in [&[-1, 4][..], &[i64::MAX, i64::MAX], &[1 << 40, 1 << 40]] {
        let r = raw_response("FP32", shape, vec![0; 16]);
        assert_decode_error(y(&r).element_count(), "negative dimension or too many");
        assert_decode_error(y(&r).as_f32(), "negative dimension or too many");
        let r = raw_response("BYTES", shape, vec![0; 16]);
        assert_decode_error(y(&r).as_bytes(), "negative dimension or too many");
    }
    // A huge but representable count must not be allocated up front either.
    let r = raw_response("BYTES", &[1 << 40], vec![0; 16]);
    assert_decode_error(
        y(&r).as_bytes(),
        "should hold 1099511627776 elements, found 4",
    );
    let r = raw_response("UINT8", &[1 << 40], vec![0; 16]);
    assert_decode_error(y(&r).as_u8(), "got 16");
}

#[test]
fn bytes_outputs_check_their_framing() {
    let r = raw_response("BYTES", &[2], encode_bytes(&["a"]).unwrap());
    assert_decode_error(y(&r).as_bytes(), "should hold 2 elements, found 1");
    let r = raw_response("BYTES", &[1], vec![9, 0, 0, 0, b'a']);
    assert_decode_error(
        y(&r).as_bytes(),
        "element 0 at byte 0 declares 9 bytes, but only 1 remain",
    );
    let r = raw_response("BYTES", &[1], vec![1, 0]);
    assert_decode_error(y(&r).as_strings(), "truncated length prefix");
}

#[test]
fn non_utf8_strings_are_errors_not_replacements() {
    let r = raw_response("BYTES", &[2], encode_bytes(&[&b"ok"[..], &[0xff]]).unwrap());
    assert_eq!(y(&r).as_bytes().unwrap(), [b"ok".to_vec(), vec![0xff]]);
    assert_decode_error(y(&r).as_strings(), "element 1 is not UTF-8");
}

#[test]
fn bool_bytes_other_than_0_or_1_are_decode_errors() {
    let r = raw_response("BOOL", &[2], vec![1, 7]);
    assert_decode_error(y(&r).as_bool(), "BOOL element 1 is 7");
}

#[test]
fn outputs_without_data_are_only_valid_when_empty() {
    let mut r = raw_response("FP32", &[2], vec![]).into_proto();
    r.raw_output_contents.clear();
    let r = InferResponse::from(r);
    assert_decode_error(y(&r).as_f32(), "no data for 2 elements");
    let empty = InferResponse::from(pb::ModelInferResponse {
        outputs: vec![tensor("y", "FP32", &[0, 3]), tensor("z", "BYTES", &[0])],
        ..Default::default()
    });
    assert_eq!(y(&empty).as_f32().unwrap(), Vec::<f32>::new());
    assert_eq!(
        empty.output("z").unwrap().as_bytes().unwrap(),
        Vec::<Vec<u8>>::new()
    );
}

#[test]
fn raw_blobs_pair_with_outputs_by_index() {
    let r = InferResponse::from(pb::ModelInferResponse {
        outputs: vec![tensor("a", "UINT8", &[1]), tensor("b", "UINT8", &[2])],
        raw_output_contents: vec![vec![1].into(), vec![2, 3].into()],
        ..Default::default()
    });
    assert_eq!(r.output("a").unwrap().as_u8().unwrap(), [1]);
    assert_eq!(r.output("b").unwrap().as_u8().unwrap(), [2, 3]);
    // A response with fewer blobs than outputs leaves the rest without raw data.
    let short = InferResponse::from(pb::ModelInferResponse {
        outputs: vec![tensor("a", "UINT8", &[1]), tensor("b", "UINT8", &[2])],
        raw_output_contents: vec![vec![1].into()],
        ..Default::default()
    });
    assert!(short.output("b").unwrap().raw().is_none());
    assert_decode_error(short.output("b").unwrap().as_u8(), "no data");
}

#[cfg(feature = "half")]
#[test]
fn half_precision_outputs_read_typed() {
    use half::{bf16, f16};
    let r = raw_response("FP16", &[2], vec![0x00, 0x3c, 0x00, 0xc0]);
    assert_eq!(
        y(&r).as_f16().unwrap(),
        [f16::from_f32(1.0), f16::from_f32(-2.0)]
    );
    assert!(matches!(y(&r).as_bf16(), Err(Error::Mismatch(_))));
    let r = raw_response("BF16", &[1, 1], vec![0x80, 0x3f]);
    assert_eq!(y(&r).as_bf16().unwrap(), [bf16::ONE]);
    assert_decode_error(
        raw_response("BF16", &[2], vec![0x80])
            .output("y")
            .unwrap()
            .as_bf16(),
        "bytes",
    );
    // Half floats have no typed contents field.
    let typed = typed_response(
        "FP16",
        &[1],
        InferTensorContents {
            fp32_contents: vec![1.0],
            ..Default::default()
        },
    );
    assert_decode_error(y(&typed).as_f16(), "raw only");
    let empty = typed_response("FP16", &[0], InferTensorContents::default());
    assert_eq!(y(&empty).as_f16().unwrap(), []);
}

#[test]
fn a_missing_output_is_a_mismatch_naming_the_others() {
    let r = raw_response("UINT8", &[1], vec![1]);
    assert_eq!(r.try_output("y").unwrap().as_u8().unwrap(), [1]);
    match r.try_output("z") {
        Err(Error::Mismatch(m)) => assert!(m.contains("'z'") && m.contains("[\"y\"]"), "{m}"),
        other => panic!("expected a mismatch, got {other:?}"),
    }
}
