use super::*;
use crate::codec::encode_bytes;

/// A client that never connects: these tests only build requests.
fn client() -> Client {
    Client::builder("http://127.0.0.1:9")
        .connect_lazy()
        .expect("a valid URI")
}

fn mismatch(builder: InferBuilder) -> String {
    match builder.build() {
        Err(Error::Mismatch(message)) => message,
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn builds_raw_inputs_in_order() {
    let request = client()
        .infer("mlp")
        .version("2")
        .id("req-1")
        .parameter("priority", 3i64)
        .input("x", [2, 2], &[1.0f32, 2.0, 3.0, 4.0])
        .input("mask", [2], &[true, false])
        .input_bytes("text", [2], &["hé", ""])
        .input_raw("half", DataType::Fp16, [1], vec![0x00, 0x3c])
        .output("y")
        .output("z")
        .build()
        .unwrap();
    assert_eq!(request.model_name, "mlp");
    assert_eq!(request.model_version, "2");
    assert_eq!(request.id, "req-1");
    assert_eq!(request.parameters["priority"], 3i64.into());
    let inputs: Vec<_> = request
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), i.datatype.as_str(), i.shape.as_slice()))
        .collect();
    assert_eq!(
        inputs,
        [
            ("x", "FP32", &[2, 2][..]),
            ("mask", "BOOL", &[2]),
            ("text", "BYTES", &[2]),
            ("half", "FP16", &[1]),
        ]
    );
    assert!(request.inputs.iter().all(|i| i.contents.is_none()));
    assert_eq!(
        request.raw_input_contents,
        [
            codec::encode(&[1.0f32, 2.0, 3.0, 4.0]),
            vec![1, 0],
            encode_bytes(&["hé", ""]).unwrap(),
            vec![0x00, 0x3c],
        ]
    );
    let outputs: Vec<_> = request.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["y", "z"]);
}

#[tokio::test]
async fn input_accepts_every_element_type_and_vec_references() {
    let data = vec![1i64, 2, 3];
    let request = client()
        .infer("m")
        .input("a", [3], &data)
        .input("b", [1], &[1u8])
        .input("c", [1], &[1u16])
        .input("d", [1], &[1u32])
        .input("e", [1], &[1u64])
        .input("f", [1], &[1i8])
        .input("g", [1], &[1i16])
        .input("h", [1], &[1i32])
        .input("i", [1], &[1f64])
        .build()
        .unwrap();
    let datatypes: Vec<_> = request.inputs.iter().map(|i| i.datatype.as_str()).collect();
    assert_eq!(
        datatypes,
        [
            "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "FP64"
        ]
    );
}

#[tokio::test]
async fn scalars_have_an_empty_shape_and_one_element() {
    let request = client().infer("m").input("s", [], &[5i32]).build().unwrap();
    assert_eq!(request.raw_input_contents, [vec![5, 0, 0, 0]]);
}

#[tokio::test]
async fn element_count_must_match_the_shape() {
    let message = mismatch(client().infer("m").input("x", [1, 784], &[0.0f32; 783]));
    assert_eq!(
        message,
        "input 'x': shape [1, 784] holds 784 elements, got 783"
    );
    let message = mismatch(client().infer("m").input_bytes("t", [3], &["a", "b"]));
    assert_eq!(message, "input 't': shape [3] holds 3 elements, got 2");
}

#[tokio::test]
async fn negative_and_overflowing_shapes_are_mismatches() {
    for shape in [&[-1, 2][..], &[i64::MAX, 4], &[1 << 40, 1 << 40]] {
        let message = mismatch(client().infer("m").input("x", shape, &[0.0f32; 2]));
        assert!(
            message.contains("negative dimension or too many elements"),
            "{message}"
        );
        let message = mismatch(
            client()
                .infer("m")
                .input_raw("x", DataType::Fp16, shape, vec![]),
        );
        assert!(
            message.contains("negative dimension or too many elements"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn raw_inputs_are_validated() {
    let message = mismatch(
        client()
            .infer("m")
            .input_raw("h", DataType::Bf16, [2], vec![0; 3]),
    );
    assert_eq!(message, "input 'h': 2 BF16 elements need 4 bytes, got 3");
    let truncated = vec![3, 0, 0, 0, b'a'];
    let message = mismatch(
        client()
            .infer("m")
            .input_raw("t", DataType::Bytes, [1], truncated),
    );
    assert!(
        message.contains("element 0 at byte 0 declares 3 bytes, but only 1 remain"),
        "{message}"
    );
    let two = encode_bytes(&["a", "b"]).unwrap();
    let message = mismatch(
        client()
            .infer("m")
            .input_raw("t", DataType::Bytes, [3], two),
    );
    assert!(
        message.contains("should hold 3 elements, found 2"),
        "{message}"
    );
}

#[tokio::test]
async fn duplicate_inputs_are_mismatches() {
    let builder = client()
        .infer("m")
        .input("x", [1], &[1.0f32])
        .input("x", [1], &[2.0f32]);
    assert_eq!(mismatch(builder), "input 'x' given more than once");
}

#[tokio::test]
async fn the_first_mistake_is_reported() {
    let builder = client()
        .infer("m")
        .input("a", [2], &[1u8])
        .input("b", [-1], &[1u8])
        .input("c", [1], &[1u8]);
    assert_eq!(
        mismatch(builder),
        "input 'a': shape [2] holds 2 elements, got 1"
    );
}

#[tokio::test]
async fn a_mismatch_is_reported_by_send_without_a_connection() {
    // The endpoint is unreachable: only a local check can answer this.
    let err = client()
        .infer("m")
        .input("a", [2], &[1u8])
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    assert_eq!(err.code(), None);
}

#[tokio::test]
async fn requests_and_errors_can_cross_tasks() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let send = client().infer("m").input("a", [2], &[1u8]).send();
    assert_send(&send);
    let err = send.await.unwrap_err();
    assert_send(&err);
    let _: &(dyn std::error::Error + Send + Sync + 'static) = &err;
}
