//! The client SDK against a real in-process oxserve: every datatype through
//! the typed API, every helper, and errors that keep the server's code and
//! message (or are caught before anything is sent).

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::fmt::Debug;
use std::time::Duration;

use common::{INFERENCE_SERVICE, config, example_models, start, test_models};
use oxserve_client::{Client, DataType, Element, Error, Output, RetryPolicy, ServingStatus};
use tonic::Code;

/// Sends `values` through `identity_<datatype>` with the typed builder and
/// reads them back with `read`.
async fn typed<T: Element + PartialEq + Debug>(
    client: &Client,
    values: &[T],
    read: impl Fn(&Output<'_>) -> oxserve_client::Result<Vec<T>>,
) {
    let dt = T::DATATYPE;
    let model = format!("identity_{}", dt.as_str().to_lowercase());
    let shape = [1, values.len() as i64];
    let response = client
        .infer(&model)
        .input("INPUT0", shape, values)
        .output("OUTPUT0")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{dt}: {e}"));
    let out = response.try_output("OUTPUT0").unwrap();
    assert_eq!((out.dtype().unwrap(), out.shape()), (dt, &shape[..]));
    assert_eq!(read(&out).unwrap(), values, "{dt}");
    // Reading as another type is the caller's mistake, not the server's.
    let wrong = if dt == DataType::Fp32 {
        out.as_f64().map(drop)
    } else {
        out.as_f32().map(drop)
    };
    assert!(matches!(wrong, Err(Error::Mismatch(_))), "{dt}: {wrong:?}");
}

#[tokio::test]
async fn every_datatype_round_trips_through_the_typed_api() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    typed(c, &[true, false, true], |o| o.as_bool()).await;
    typed(c, &[0u8, 1, 255], |o| o.as_u8()).await;
    typed(c, &[0u16, 1, u16::MAX], |o| o.as_u16()).await;
    typed(c, &[0u32, 1, u32::MAX], |o| o.as_u32()).await;
    typed(c, &[0u64, 1, u64::MAX], |o| o.as_u64()).await;
    typed(c, &[i8::MIN, -1, i8::MAX], |o| o.as_i8()).await;
    typed(c, &[i16::MIN, -1, i16::MAX], |o| o.as_i16()).await;
    typed(c, &[i32::MIN, -1, i32::MAX], |o| o.as_i32()).await;
    typed(c, &[i64::MIN, -1, i64::MAX], |o| o.as_i64()).await;
    typed(c, &[f32::MIN_POSITIVE, -0.0, f32::INFINITY], |o| o.as_f32()).await;
    typed(c, &[f64::MAX, 0.1, f64::NEG_INFINITY], |o| o.as_f64()).await;

    // FP16 and BF16 have no Rust primitive (without the `half` feature):
    // they travel as raw little-endian bytes.
    for (dt, model) in [
        (DataType::Fp16, "identity_fp16"),
        (DataType::Bf16, "identity_bf16"),
    ] {
        // 1.0, -2.0 and +infinity in each encoding.
        let raw = match dt {
            DataType::Fp16 => vec![0x00, 0x3c, 0x00, 0xc0, 0x00, 0x7c],
            _ => vec![0x80, 0x3f, 0x00, 0xc0, 0x80, 0x7f],
        };
        let response = c
            .infer(model)
            .input_raw("INPUT0", dt, [3, 1], raw.clone())
            .send()
            .await
            .unwrap();
        let out = response.try_output("OUTPUT0").unwrap();
        assert_eq!((out.dtype().unwrap(), out.shape()), (dt, &[3, 1][..]));
        assert_eq!(out.raw(), Some(&raw[..]));
    }

    // BYTES in from anything byte-like, out as bytes or strings.
    let texts = ["", "hello", "naïve ☃"];
    let response = c
        .infer("identity_bytes")
        .input_bytes("INPUT0", [1, 3], &texts)
        .send()
        .await
        .unwrap();
    let out = response.try_output("OUTPUT0").unwrap();
    assert_eq!(out.as_strings().unwrap(), texts);
    let binary: Vec<Vec<u8>> = vec![vec![0xff, 0x00], vec![], vec![0x80; 3]];
    let response = c
        .infer("identity_bytes")
        .input_bytes("INPUT0", [3, 1], &binary)
        .send()
        .await
        .unwrap();
    let out = response.try_output("OUTPUT0").unwrap();
    assert_eq!(out.as_bytes().unwrap(), binary);
    assert!(matches!(out.as_strings(), Err(Error::Decode(_))));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_helper_answers() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    assert!(c.is_live().await.unwrap());
    assert!(c.is_ready().await.unwrap());
    assert!(c.model_ready("add_sub", None).await.unwrap());
    assert!(c.model_ready("versioned", Some("3")).await.unwrap());
    assert!(!c.model_ready("versioned", Some("2")).await.unwrap());
    assert!(!c.model_ready("no_such_model", None).await.unwrap());

    let meta = c.server_metadata().await.unwrap();
    assert_eq!(meta.name, "oxserve");
    let meta = c.model_metadata("add_sub", Some("1")).await.unwrap();
    assert_eq!(meta.name, "add_sub");
    let inputs: Vec<&str> = meta.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(inputs, ["INPUT0", "INPUT1"]);
    let outputs: Vec<&str> = meta.outputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(outputs, ["OUTPUT0", "OUTPUT1"]);

    assert_eq!(c.health_check("").await.unwrap(), ServingStatus::Serving);
    assert!(
        c.health_check(INFERENCE_SERVICE)
            .await
            .unwrap()
            .is_serving()
    );
    let err = c.health_check("no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert_eq!(c.endpoints(), [format!("http://{}", server.addr)]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn server_errors_keep_their_code_and_message() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let status = |e: Error| match e {
        Error::Status { code, message } => (code, message),
        other => panic!("expected a status, got {other:?}"),
    };

    let (code, message) = status(c.infer("no_such_model").id("r1").send().await.unwrap_err());
    assert_eq!(code, Code::NotFound);
    assert!(message.contains("no_such_model"), "{message}");
    assert!(message.starts_with("[request id: r1]"), "{message}");

    let wrong_type = c
        .infer("identity_fp32")
        .input("INPUT0", [1, 2], &[1.0f64, 2.0])
        .send();
    let (code, message) = status(wrong_type.await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("FP64") && message.contains("FP32"),
        "{message}"
    );

    let unknown_input = c.infer("identity_fp32").input("NOPE", [1, 1], &[1.0f32]);
    let (code, message) = status(unknown_input.send().await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("NOPE"), "{message}");

    let unknown_output = c
        .infer("identity_fp32")
        .input("INPUT0", [1, 1], &[1.0f32])
        .output("NOPE");
    let (code, _) = status(unknown_output.send().await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);

    let (code, _) = status(c.model_metadata("no_such_model", None).await.unwrap_err());
    assert_eq!(code, Code::NotFound);

    // The server is still fine afterwards.
    assert!(c.is_ready().await.unwrap());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn client_side_mistakes_are_caught_before_sending() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    // Three elements for a shape of two: nothing is sent.
    let err = c
        .infer("identity_fp32")
        .input("INPUT0", [1, 2], &[1.0f32, 2.0, 3.0])
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Mismatch(m) if m.contains("INPUT0")),
        "{err}"
    );
    assert_eq!(err.code(), None);

    // Over the client's own send limit: OUT_OF_RANGE, like gRPC's.
    let small = c.clone().with_max_message_size(1024);
    let err = small
        .infer("identity_fp32")
        .input("INPUT0", [1, 1024], &[0.0f32; 1024])
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::OutOfRange), "{err}");

    // A deadline the model cannot meet.
    let n = 2048usize;
    let matrix = vec![1e-3f32; n * n];
    let err = c
        .infer("slow")
        .input("INPUT0", [n as i64, n as i64], &matrix)
        .timeout(Some(Duration::from_millis(20)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::DeadlineExceeded), "{err}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_documented_quick_start_works() {
    // The crate docs' example, against the example models.
    let server = start(config(&example_models())).await;
    let client = Client::builder(format!("http://{}", server.addr))
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .retry(RetryPolicy::default().max_attempts(3))
        .user_agent("oxserve-tests")
        .connect()
        .await
        .unwrap();
    let data = vec![0.5f32; 784];
    let response = client
        .infer("mlp")
        .input("input", [1, 784], &data[..])
        .output("output")
        .send()
        .await
        .unwrap();
    let output = response.try_output("output").unwrap();
    assert_eq!(output.shape(), [1, 10]);
    let scores = output.as_f32().unwrap();
    assert!((scores.iter().sum::<f32>() - 1.0).abs() < 1e-4);

    let response = client
        .infer("intent")
        .input_bytes("text", [1, 1], &["thanks a lot!"])
        .send()
        .await
        .unwrap();
    let label = response.try_output("label").unwrap().as_strings().unwrap();
    assert_eq!(label, ["thanks"]);
    server.stop().await.unwrap();
}
