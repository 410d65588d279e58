//! Every row of the protocol's error table, through the wire: the right
//! code, a message naming the model, the tensor and what was expected, and a
//! server that keeps serving afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use common::{config, f32_bytes, start, test_models};
use oxserve_client::{Client, pb};
use tonic::Code;

type Input = pb::model_infer_request::InferInputTensor;

fn input(name: &str, datatype: &str, shape: &[i64]) -> Input {
    Input {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn request(model: &str, inputs: Vec<Input>, raw: Vec<Vec<u8>>) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs,
        raw_input_contents: raw.into_iter().map(Into::into).collect(),
        ..Default::default()
    }
}

/// Sends `request`, expects `code`, and returns the message.
async fn rejected(client: &Client, request: pb::ModelInferRequest, code: Code) -> String {
    let e = client
        .infer_raw(request)
        .await
        .expect_err("request should fail");
    assert_eq!(e.code(), Some(code), "{e}");
    e.message().unwrap().to_string()
}

fn row() -> Vec<u8> {
    f32_bytes(&[0.5; 16])
}

/// A valid add_sub request, to show the server still serves.
async fn still_serving(client: &Client) {
    assert!(client.is_live().await.unwrap());
    let r = client
        .infer_raw(request(
            "add_sub",
            vec![
                input("INPUT0", "FP32", &[1, 16]),
                input("INPUT1", "FP32", &[1, 16]),
            ],
            vec![row(), row()],
        ))
        .await
        .unwrap();
    assert_eq!(r.raw_output_contents.len(), 2);
}

#[tokio::test]
async fn unknown_models_and_versions_are_not_found() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let msg = rejected(c, request("nope", vec![], vec![]), Code::NotFound).await;
    assert!(msg.contains("'nope'"), "{msg}");

    let mut r = request("nope", vec![], vec![]);
    r.id = "abc-1".into();
    let msg = rejected(c, r, Code::NotFound).await;
    assert!(msg.starts_with("[request id: abc-1] "), "{msg}");

    let mut r = request(
        "versioned",
        vec![input("INPUT0", "FP32", &[1, 1])],
        vec![f32_bytes(&[1.0])],
    );
    r.model_version = "7".into();
    let msg = rejected(c, r.clone(), Code::NotFound).await;
    assert!(msg.contains("'versioned'") && msg.contains('7'), "{msg}");
    r.model_version = "latest".into();
    rejected(c, r, Code::NotFound).await;

    let e = c.model_metadata("nope", None).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
    assert!(!c.model_ready("nope", None).await.unwrap());
    still_serving(c).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_model_that_failed_to_load_is_unavailable_and_the_others_serve() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    assert!(!c.model_ready("broken", None).await.unwrap());
    let msg = rejected(c, request("broken", vec![], vec![]), Code::Unavailable).await;
    assert!(
        msg.contains("'broken'") && msg.contains("failed to load"),
        "{msg}"
    );
    let e = c.model_metadata("broken", Some("1")).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    still_serving(c).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments_with_precise_messages() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let two = |i0: Input, i1: Input| vec![i0, i1];
    let ok0 = || input("INPUT0", "FP32", &[1, 16]);
    let ok1 = || input("INPUT1", "FP32", &[1, 16]);
    let invalid = |r| rejected(c, r, Code::InvalidArgument);

    // contents mixed with raw_input_contents
    let mut mixed = ok0();
    mixed.contents = Some(pb::InferTensorContents {
        fp32_contents: vec![0.0; 16],
        ..Default::default()
    });
    let msg = invalid(request("add_sub", two(mixed, ok1()), vec![row(), row()])).await;
    assert!(
        msg.contains("mixes 'contents' and 'raw_input_contents'"),
        "{msg}"
    );

    // input without data
    let msg = invalid(request("add_sub", two(ok0(), ok1()), vec![])).await;
    assert!(msg.contains("'INPUT0'") && msg.contains("no data"), "{msg}");

    // unknown input name
    let msg = invalid(request(
        "add_sub",
        two(ok0(), input("INPUT9", "FP32", &[1, 16])),
        vec![row(), row()],
    ))
    .await;
    assert!(
        msg.contains("'INPUT9'") && msg.contains("'INPUT0', 'INPUT1'"),
        "{msg}"
    );

    // duplicate input
    let msg = invalid(request("add_sub", two(ok0(), ok0()), vec![row(), row()])).await;
    assert!(
        msg.contains("'INPUT0'") && msg.contains("more than once"),
        "{msg}"
    );

    // missing required input, listed
    let msg = invalid(request("add_sub", vec![ok0()], vec![row()])).await;
    assert_eq!(
        msg,
        "model 'add_sub' expects 2 inputs, but the request is missing 'INPUT1'"
    );

    // unknown requested output
    let mut r = request("add_sub", two(ok0(), ok1()), vec![row(), row()]);
    r.outputs = vec![pb::model_infer_request::InferRequestedOutputTensor {
        name: "OUT".into(),
        ..Default::default()
    }];
    let msg = invalid(r).await;
    assert!(
        msg.contains("'OUT'") && msg.contains("'OUTPUT0', 'OUTPUT1'"),
        "{msg}"
    );

    // datatype differs from the model's
    let msg = invalid(request(
        "add_sub",
        two(input("INPUT0", "FP64", &[1, 16]), ok1()),
        vec![vec![0; 128], row()],
    ))
    .await;
    assert_eq!(
        msg,
        "input 'INPUT0': data-type is 'FP64', but model 'add_sub' expects 'FP32'"
    );

    // shape differs from the model's
    let msg = invalid(request(
        "add_sub",
        two(input("INPUT0", "FP32", &[1, 8]), ok1()),
        vec![f32_bytes(&[0.0; 8]), row()],
    ))
    .await;
    assert!(msg.contains("[1, 8]") && msg.contains("[-1, 16]"), "{msg}");
    let msg = invalid(request(
        "fixed",
        vec![input("INPUT0", "FP32", &[3, 2])],
        vec![f32_bytes(&[0.0; 6])],
    ))
    .await;
    assert!(msg.contains("[3, 2]") && msg.contains("[2, 3]"), "{msg}");

    // -1 in a request shape
    let msg = invalid(request(
        "add_sub",
        two(input("INPUT0", "FP32", &[-1, 16]), ok1()),
        vec![row(), row()],
    ))
    .await;
    assert!(msg.contains("negative dimension"), "{msg}");

    // inputs disagree on batch size
    let msg = invalid(request(
        "add_sub",
        two(input("INPUT0", "FP32", &[2, 16]), ok1()),
        vec![[row(), row()].concat(), row()],
    ))
    .await;
    assert!(msg.contains("disagree on the batch size"), "{msg}");

    // raw byte size != product(shape) * element size
    let msg = invalid(request(
        "add_sub",
        two(ok0(), ok1()),
        vec![f32_bytes(&[0.0; 15]), row()],
    ))
    .await;
    assert!(msg.contains("Expected 64 bytes, got 60"), "{msg}");

    // unknown datatype string
    let msg = invalid(request(
        "add_sub",
        two(input("INPUT0", "FLOAT", &[1, 16]), ok1()),
        vec![row(), row()],
    ))
    .await;
    assert!(msg.contains("'FLOAT'"), "{msg}");

    still_serving(c).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_sizes_are_rejected_before_any_large_allocation() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let bytes = |shape: &[i64], raw: Vec<u8>| {
        request(
            "identity_bytes",
            vec![input("INPUT0", "BYTES", shape)],
            vec![raw],
        )
    };

    // Truncated length prefix.
    let msg = rejected(c, bytes(&[1, 1], vec![3, 0]), Code::InvalidArgument).await;
    assert!(msg.contains("truncated length prefix"), "{msg}");
    // A prefix claiming 4 GiB, followed by 4 bytes.
    let msg = rejected(
        c,
        bytes(&[1, 1], vec![255, 255, 255, 255, 1, 2, 3, 4]),
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("declares 4294967295 bytes"), "{msg}");
    // Element count != product(shape).
    let msg = rejected(
        c,
        bytes(&[1, 3], vec![1, 0, 0, 0, b'a']),
        Code::InvalidArgument,
    )
    .await;
    assert!(
        msg.contains("1 elements") && msg.contains("needs 3"),
        "{msg}"
    );
    // A shape declaring 2^60 strings with a 5-byte payload.
    rejected(
        c,
        bytes(&[1 << 30, 1 << 30], vec![1, 0, 0, 0, b'a']),
        Code::InvalidArgument,
    )
    .await;

    // Element count overflowing 64 bits.
    let r = request(
        "identity_fp32",
        vec![input("INPUT0", "FP32", &[i64::MAX, i64::MAX])],
        vec![vec![0; 4]],
    );
    let msg = rejected(c, r, Code::InvalidArgument).await;
    assert!(msg.contains("more elements than can be addressed"), "{msg}");
    // A huge declared FP32 size with a tiny payload.
    let r = request(
        "identity_fp32",
        vec![input("INPUT0", "FP32", &[1 << 40, 1 << 20])],
        vec![vec![0; 4]],
    );
    rejected(c, r, Code::InvalidArgument).await;
    // Typed contents that do not fit the datatype.
    let mut i = input("INPUT0", "UINT8", &[1, 1]);
    i.contents = Some(pb::InferTensorContents {
        uint_contents: vec![256],
        ..Default::default()
    });
    let msg = rejected(
        c,
        request("identity_uint8", vec![i], vec![]),
        Code::InvalidArgument,
    )
    .await;
    assert!(msg.contains("256") && msg.contains("UINT8"), "{msg}");

    still_serving(c).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn messages_over_the_configured_limit_are_refused_and_the_server_goes_on() {
    let mut cfg = config(&test_models());
    cfg.max_message_size = 64 * 1024;
    let server = start(cfg).await;
    let c = &server.client;
    let big = request(
        "identity_uint8",
        vec![input("INPUT0", "UINT8", &[1, 100_000])],
        vec![vec![7; 100_000]],
    );
    let e = c.infer_raw(big).await.unwrap_err();
    assert!(
        matches!(e.code(), Some(Code::OutOfRange | Code::ResourceExhausted)),
        "{e}"
    );
    still_serving(c).await;
    server.stop().await.unwrap();
}
