//! The client against the in-process mock server, over a real socket.

use std::time::Duration;

use super::*;
use crate::{DataType, InferResponse, mock};
use tonic::transport::Endpoint;

async fn connected() -> (mock::Mock, Client) {
    let mock = mock::start().await;
    let client = Client::connect(mock.endpoint()).await.expect("mock is up");
    (mock, client)
}

/// An address nothing listens on: bind an ephemeral port, then free it.
async fn closed_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn server_and_model_rpcs() {
    let (_mock, client) = connected().await;
    assert!(client.is_live().await.unwrap());
    assert!(client.is_ready().await.unwrap());
    assert!(client.model_ready("echo", None).await.unwrap());
    assert!(client.model_ready("echo", Some("1")).await.unwrap());
    assert!(!client.model_ready("echo", Some("2")).await.unwrap());
    let server = client.server_metadata().await.unwrap();
    assert_eq!(
        (server.name.as_str(), server.version.as_str()),
        ("mock", "0.0.0")
    );
    let model = client.model_metadata("echo", None).await.unwrap();
    assert_eq!(model.versions, ["1"]);
    let err = client.model_metadata("nope", Some("1")).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
    assert_eq!(err.message(), Some("unknown model 'nope'"));
}

#[tokio::test]
async fn health_follows_the_reporter() {
    let (mock, client) = connected().await;
    assert_eq!(
        client.health_check("").await.unwrap(),
        ServingStatus::Serving
    );
    let status = client.health_check(mock::SERVICE).await.unwrap();
    assert_eq!(status, ServingStatus::NotServing);
    assert!(!status.is_serving());
    mock.health
        .set_service_status(mock::SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    assert!(
        client
            .health_check(mock::SERVICE)
            .await
            .unwrap()
            .is_serving()
    );
    let err = client.health_check("no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
}

#[tokio::test]
async fn typed_inference_round_trips_every_datatype() {
    let (_mock, client) = connected().await;
    let image: Vec<f32> = (0..784).map(|i| i as f32 / 784.0).collect();
    let response = client
        .infer("echo")
        .version("1")
        .id("req-1")
        .input("f32", [1, 784], &image)
        .input("f64", [2], &[0.5f64, -0.5])
        .input("i8", [2], &[i8::MIN, i8::MAX])
        .input("i16", [1], &[i16::MIN])
        .input("i32", [1], &[i32::MIN])
        .input("i64", [1], &[i64::MIN])
        .input("u8", [1], &[u8::MAX])
        .input("u16", [1], &[u16::MAX])
        .input("u32", [1], &[u32::MAX])
        .input("u64", [1], &[u64::MAX])
        .input("bool", [3], &[true, false, true])
        .input_bytes("bytes", [3], &[&b""[..], b"\xff\x00", "é".as_bytes()])
        .input_raw("fp16", DataType::Fp16, [1], vec![0x00, 0x3c])
        .send()
        .await
        .unwrap();
    assert_eq!(response.id(), "req-1");
    assert_eq!(response.model_name(), "echo");
    assert_eq!(response.model_version(), "1");
    assert_eq!(response.outputs().len(), 13);
    let out = |name| response.output(name).unwrap();
    assert_eq!(out("f32").as_f32().unwrap(), image);
    assert_eq!(out("f32").shape(), [1, 784]);
    assert_eq!(out("f64").as_f64().unwrap(), [0.5, -0.5]);
    assert_eq!(out("i8").as_i8().unwrap(), [i8::MIN, i8::MAX]);
    assert_eq!(out("i16").as_i16().unwrap(), [i16::MIN]);
    assert_eq!(out("i32").as_i32().unwrap(), [i32::MIN]);
    assert_eq!(out("i64").as_i64().unwrap(), [i64::MIN]);
    assert_eq!(out("u8").as_u8().unwrap(), [u8::MAX]);
    assert_eq!(out("u16").as_u16().unwrap(), [u16::MAX]);
    assert_eq!(out("u32").as_u32().unwrap(), [u32::MAX]);
    assert_eq!(out("u64").as_u64().unwrap(), [u64::MAX]);
    assert_eq!(out("bool").as_bool().unwrap(), [true, false, true]);
    assert_eq!(
        out("bytes").as_bytes().unwrap(),
        [vec![], vec![0xff, 0x00], "é".as_bytes().to_vec()]
    );
    assert_eq!(out("fp16").datatype(), "FP16");
    assert_eq!(out("fp16").raw(), Some(&[0x00, 0x3c][..]));
}

#[tokio::test]
async fn requested_outputs_are_sent() {
    let (_mock, client) = connected().await;
    let response = client
        .infer("echo")
        .input("a", [1], &[1u8])
        .input("b", [1], &[2u8])
        .output("b")
        .send()
        .await
        .unwrap();
    let names: Vec<_> = response.outputs().map(|o| o.name()).collect();
    assert_eq!(names, ["b"]);
}

#[tokio::test]
async fn server_errors_keep_their_code() {
    let (_mock, client) = connected().await;
    let err = client.infer("nope").id("r7").send().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
    assert_eq!(err.message(), Some("[request id: r7] unknown model 'nope'"));
    assert!(matches!(err, Error::Status { .. }));
}

#[tokio::test]
async fn infer_raw_sends_the_message_as_is() {
    let (_mock, client) = connected().await;
    let mut request = client
        .infer("echo")
        .input("a", [2], &[1u8, 2])
        .build()
        .unwrap();
    // Deliberately inconsistent: the typed builder would refuse this.
    request.inputs[0].shape = vec![5];
    let response = InferResponse::from(client.infer_raw(request).await.unwrap());
    let err = response.output("a").unwrap().as_u8().unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");
}

#[tokio::test]
async fn a_missed_deadline_is_deadline_exceeded() {
    let mock = mock::start().await;
    let client = Client::builder(mock.endpoint())
        .timeout(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let err = client
        .infer("sleep")
        .parameter("sleep_ms", 5_000u64)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::DeadlineExceeded), "{err}");
    // A longer per-request timeout overrides the client's.
    client
        .infer("sleep")
        .parameter("sleep_ms", 100u64)
        .timeout(Some(Duration::from_secs(30)))
        .send()
        .await
        .unwrap();
    assert_eq!(client.timeout(), Some(Duration::from_millis(50)));
}

#[tokio::test]
async fn default_message_limit_exceeds_tonics_4_mib() {
    let (_mock, client) = connected().await;
    let size = 8 << 20;
    let response = client
        .infer("big")
        .parameter("size", size as u64)
        .send()
        .await
        .unwrap();
    assert_eq!(response.output("big").unwrap().raw().unwrap().len(), size);
    let payload = vec![0u8; size];
    let response = client
        .infer("echo")
        .input("x", [size as i64], &payload)
        .send()
        .await;
    assert_eq!(
        response
            .unwrap()
            .output("x")
            .unwrap()
            .as_u8()
            .unwrap()
            .len(),
        size
    );
}

#[tokio::test]
async fn message_limit_is_configurable_both_ways() {
    let mock = mock::start().await;
    let client = Client::builder(mock.endpoint())
        .max_message_size(1 << 20)
        .connect()
        .await
        .unwrap();
    let size = 2u64 << 20;
    let err = client
        .infer("big")
        .parameter("size", size)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange), "{err}");
    let payload = vec![0u8; 2 << 20];
    let err = client
        .infer("echo")
        .input("x", [payload.len() as i64], &payload)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::OutOfRange), "{err}");
    assert!(
        err.to_string().contains("message limit of 1048576 bytes"),
        "{err}"
    );
    assert_eq!(client.max_message_size(), 1 << 20);
    // Below the limit still works.
    client
        .infer("big")
        .parameter("size", 1_000u64)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn from_channel_uses_an_existing_connection() {
    let mock = mock::start().await;
    let channel = Endpoint::from_shared(mock.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = Client::from_channel(channel);
    assert!(client.is_live().await.unwrap());
    assert_eq!(client.timeout(), None);
    let clone = client.clone().with_timeout(Some(Duration::from_secs(1)));
    assert!(clone.is_ready().await.unwrap());
    assert_eq!(client.timeout(), None, "clones keep their own timeout");
}

#[tokio::test]
async fn unreachable_servers_fail_to_connect() {
    let endpoint = closed_endpoint().await;
    let err = Client::builder(endpoint.clone())
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Connect { endpoint: e, .. } if *e == endpoint),
        "{err}"
    );
    assert_eq!(err.code(), None);
    let lazy = Client::builder(endpoint).connect_lazy().unwrap();
    let err = lazy.is_live().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");
}

#[tokio::test]
async fn invalid_endpoints_are_connect_errors() {
    let err = Client::connect("not a uri").await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(Client::builder("").connect_lazy().is_err());
}

#[cfg(feature = "half")]
#[tokio::test]
async fn half_precision_inputs_travel_as_fp16_and_bf16() {
    use half::{bf16, f16};
    let (_mock, client) = connected().await;
    let h = [f16::from_f32(0.5), f16::MAX, f16::NEG_INFINITY];
    let b = [bf16::from_f32(-3.0), bf16::MIN_POSITIVE];
    let response = client
        .infer("echo")
        .input("h", [3], &h)
        .input("b", [1, 2], &b)
        .send()
        .await
        .unwrap();
    assert_eq!(response.output("h").unwrap().datatype(), "FP16");
    assert_eq!(response.output("h").unwrap().as_f16().unwrap(), h);
    assert_eq!(response.output("b").unwrap().datatype(), "BF16");
    assert_eq!(response.output("b").unwrap().as_bf16().unwrap(), b);
}
