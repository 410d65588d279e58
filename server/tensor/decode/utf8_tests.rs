//! UTF-8 checks of BYTES inputs that feed text operators.

use bytes::Bytes;
use oxserve_proto::BytesWriter;
use oxserve_proto::inference::{InferTensorContents, ModelInferRequest};

use super::*;

fn text_model(utf8: bool) -> ModelSpec {
    let t = |name: &str| TensorSpec {
        name: name.into(),
        datatype: DataType::Bytes,
        dims: vec![-1, 1],
    };
    ModelSpec {
        name: "intent".into(),
        inputs: vec![t("text")],
        outputs: vec![t("label")],
        max_batch_size: 8,
        max_request_rows: usize::MAX,
        utf8_inputs: if utf8 { vec![0] } else { Vec::new() },
    }
}

fn request(elements: &[&[u8]], raw: bool) -> ModelInferRequest {
    let mut input = InferInputTensor {
        name: "text".into(),
        datatype: "BYTES".into(),
        shape: vec![elements.len() as i64, 1],
        ..Default::default()
    };
    let mut raw_input_contents = Vec::new();
    if raw {
        raw_input_contents.push(BytesWriter::encode(elements).expect("short elements"));
    } else {
        input.contents = Some(InferTensorContents {
            bytes_contents: elements.iter().map(|e| Bytes::copy_from_slice(e)).collect(),
            ..Default::default()
        });
    }
    ModelInferRequest {
        model_name: "intent".into(),
        inputs: vec![input],
        raw_input_contents,
        ..Default::default()
    }
}

#[test]
fn non_utf8_text_is_the_callers_error_naming_the_element() {
    for raw in [true, false] {
        let r = request(&[b"hello", "caf\u{e9}".as_bytes(), b"bad \xff\xfe"], raw);
        let error = decode_request(&text_model(true), &r, &[]).expect_err("not UTF-8");
        let InvalidInput::NotUtf8 { element, .. } = &error else {
            panic!("unexpected error {error:?}");
        };
        assert_eq!(*element, 2, "raw {raw}");
        assert!(
            error
                .to_string()
                .starts_with("input 'text' of model 'intent': element 2 is not UTF-8 text"),
            "{error}"
        );
    }
}

#[test]
fn utf8_text_passes() {
    let r = request(&[b"hello", "caf\u{e9}".as_bytes(), b""], true);
    decode_request(&text_model(true), &r, &[]).expect("valid text");
}

#[test]
fn inputs_not_feeding_text_operators_take_any_bytes() {
    let r = request(&[b"\xff\x00\x80"], true);
    decode_request(&text_model(false), &r, &[]).expect("any bytes");
}
