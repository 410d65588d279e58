//! Client faults are the client's, and cheap (issue 12, item 4).
//!
//! The mutation sniff: valid ModelInfer messages for the example models,
//! mutated at random (fixed seed) and sent as raw bytes over gRPC. Every
//! answer must be a success or a caller's code, never INTERNAL; the server
//! stays healthy; the log holds no WARN or ERROR line for any of it; and
//! every client-caused failure is counted in `oxserve_client_errors_total`.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use common::{config, example_models, f32_bytes, start};
use oxserve_client::pb;
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

/// Mutated requests sent by the sniff.
const MUTATIONS: usize = 2_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 16;

/// WARN and ERROR events seen by the test's subscriber, with their text.
#[derive(Clone, Default)]
struct Loud(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Loud {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= Level::WARN {
            let mut text = format!("{} {}", event.metadata().level(), event.metadata().target());
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    text.push_str(&format!(" {}={value:?}", field.name()));
                },
            );
            self.0.lock().unwrap().push(text);
        }
    }
}

/// Sends bytes as they are, reads the answer as `R`.
#[derive(Debug)]
struct RawCodec<R>(std::marker::PhantomData<R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(std::marker::PhantomData)
    }
}

struct RawEncoder;
impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

struct ProstDecoder<R>(std::marker::PhantomData<R>);
impl<R: Message + Default> Decoder for ProstDecoder<R> {
    type Item = R;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<R>, tonic::Status> {
        R::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::data_loss(e.to_string()))
    }
}

impl<R: Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<R>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ProstDecoder<R> {
        ProstDecoder(std::marker::PhantomData)
    }
}

const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const MODEL_STREAM_INFER: &str = "/inference.GRPCInferenceService/ModelStreamInfer";

/// Sends `body` as a ModelInfer request; the answer's code.
async fn send_raw(channel: Channel, body: Bytes) -> Result<pb::ModelInferResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(MODEL_INFER),
        RawCodec::<pb::ModelInferResponse>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// xorshift64*: a fixed seed gives the same mutations on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation (or a few) of `seed`.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(m.len());
        match rng.below(8) {
            0 => m[at] ^= 1 << rng.below(8),
            1 => m[at] = rng.next() as u8,
            2 => m[at] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)],
            3 => {
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    m.insert(at, rng.next() as u8);
                }
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(m.len());
                m.drain(at..end);
            }
            5 => m.truncate(at),
            6 => {
                let end = (at + 1 + rng.below(32)).min(m.len());
                let chunk = m[at..end].to_vec();
                let to = rng.below(m.len());
                m.splice(to..to, chunk);
            }
            // Non-UTF-8 into whatever text is there (model names, strings).
            _ => m[at] = 0xc0 | (rng.next() as u8 & 0x1f) | 0x20,
        }
        if m.is_empty() {
            m.push(rng.next() as u8);
        }
    }
    m
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> pb::model_infer_request::InferInputTensor {
    pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

/// Valid requests for the example models, encoded: the seeds.
fn seeds() -> Vec<Vec<u8>> {
    let mlp = pb::ModelInferRequest {
        model_name: "mlp".into(),
        id: "m-1".into(),
        inputs: vec![input("input", "FP32", &[1, 784])],
        raw_input_contents: vec![f32_bytes(&[0.25; 784]).into()],
        ..Default::default()
    };
    let text = |elements: &[&str]| pb::InferTensorContents {
        bytes_contents: elements
            .iter()
            .map(|e| Bytes::copy_from_slice(e.as_bytes()))
            .collect(),
        ..Default::default()
    };
    let mut typed = input("text", "BYTES", &[2, 1]);
    typed.contents = Some(text(&["hello there", "thanks a lot"]));
    let intent_typed = pb::ModelInferRequest {
        model_name: "intent".into(),
        inputs: vec![typed],
        ..Default::default()
    };
    let mut raw = Vec::new();
    for e in ["what's up", "bye"] {
        raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
        raw.extend_from_slice(e.as_bytes());
    }
    let intent_raw = pb::ModelInferRequest {
        model_name: "intent".into(),
        model_version: "1".into(),
        inputs: vec![input("text", "BYTES", &[2, 1])],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "label".into(),
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    };
    [mlp, intent_typed, intent_raw]
        .iter()
        .map(Message::encode_to_vec)
        .collect()
}

/// Codes a mutated request may get: success, or the caller's or the
/// load's codes. Never INTERNAL, UNKNOWN, DATA_LOSS or UNIMPLEMENTED.
fn acceptable(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DeadlineExceeded
    )
}

fn client_errors(metrics: &BTreeMap<String, f64>, protocol: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| {
            k.starts_with("oxserve_client_errors_total{")
                && k.contains(&format!("protocol=\"{protocol}\""))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_get_callers_codes_and_log_nothing_loud() {
    let loud = Loud::default();
    let subscriber = tracing_subscriber::registry().with(loud.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = start(config(&example_models())).await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let before = server.metrics().await;
    let quiet_before = loud.0.lock().unwrap().len();

    let seeds = seeds();
    // Every seed is valid as it is: the sniff starts from requests that work.
    for seed in &seeds {
        send_raw(channel.clone(), Bytes::from(seed.clone()))
            .await
            .unwrap();
    }

    let mut rng = Rng(0x0ac5_e12f_u64);
    let started = Instant::now();
    let codes: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let client_caused = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..MUTATIONS {
        let body = mutate(&mut rng, &seeds[i % seeds.len()]);
        if tasks.len() >= CONCURRENCY {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (channel, codes, client_caused) = (
            channel.clone(),
            Arc::clone(&codes),
            Arc::clone(&client_caused),
        );
        tasks.spawn(async move {
            let answer = send_raw(channel, Bytes::from(body.clone())).await;
            let (code, message) = match &answer {
                Ok(_) => (Code::Ok, String::new()),
                Err(s) => (s.code(), s.message().to_string()),
            };
            assert!(
                acceptable(code),
                "mutated request answered {code:?}: {message}\nrequest bytes: {body:02x?}"
            );
            if matches!(
                code,
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::FailedPrecondition
                    | Code::OutOfRange
            ) {
                client_caused.fetch_add(1, Ordering::Relaxed);
            }
            *codes
                .lock()
                .unwrap()
                .entry(format!("{code:?}"))
                .or_default() += 1;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed();
    let codes = codes.lock().unwrap().clone();
    eprintln!("{MUTATIONS} mutated requests in {elapsed:?}: {codes:?}");
    assert!(elapsed < Duration::from_secs(120), "took {elapsed:?}");
    // The sniff exercised both decoding and validation.
    assert!(codes.get("InvalidArgument").copied().unwrap_or(0) > MUTATIONS / 10);

    // Still healthy: live, ready, and a valid request of each seed works.
    assert!(server.client.is_live().await.unwrap());
    assert!(server.client.is_ready().await.unwrap());
    for seed in &seeds {
        send_raw(channel.clone(), Bytes::from(seed.clone()))
            .await
            .unwrap();
    }

    // Every client-caused failure is counted, undecodable ones included.
    let after = server.metrics().await;
    let counted = client_errors(&after, "grpc") - client_errors(&before, "grpc");
    assert_eq!(
        counted as usize,
        client_caused.load(Ordering::Relaxed),
        "client errors counted"
    );
    let undecodable = "oxserve_client_errors_total{protocol=\"grpc\",reason=\"undecodable\"}";
    assert!(common::value(&after, undecodable) > 0.0);

    // The mark that lets the server count undecodable requests does not
    // leave it.
    let status = send_raw(channel.clone(), Bytes::from_static(&[0x0a, 0x7f, b'm']))
        .await
        .expect_err("undecodable");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.metadata().get("x-oxserve-undecodable").is_none());

    // And nothing of it was logged at WARN or ERROR.
    let lines = loud.0.lock().unwrap()[quiet_before..].to_vec();
    assert!(lines.is_empty(), "WARN/ERROR lines: {lines:#?}");

    non_utf8_text_is_invalid_argument_over_grpc_and_rest(&server, channel.clone(), &loud).await;
    an_undecodable_stream_message_ends_the_stream_with_invalid_argument(&server, channel, &loud)
        .await;
    server.stop().await.unwrap();
}

/// The intent model's text goes to StringNormalizer, which needs UTF-8:
/// both transports answer the caller's code with the same message, before
/// ONNX Runtime sees the request, and log nothing loud.
async fn non_utf8_text_is_invalid_argument_over_grpc_and_rest(
    server: &common::TestServer,
    channel: Channel,
    loud: &Loud,
) {
    let quiet_before = loud.0.lock().unwrap().len();
    let mut text = input("text", "BYTES", &[1, 1]);
    text.contents = Some(pb::InferTensorContents {
        bytes_contents: vec![Bytes::from_static(b"hi \xff\xfe there")],
        ..Default::default()
    });
    let request = pb::ModelInferRequest {
        model_name: "intent".into(),
        inputs: vec![text],
        ..Default::default()
    };
    let status = send_raw(channel, Bytes::from(request.encode_to_vec()))
        .await
        .expect_err("not UTF-8");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let expected = "input 'text' of model 'intent': element 0 is not UTF-8 text";
    assert!(
        status.message().starts_with(expected),
        "{}",
        status.message()
    );

    // REST, with the element in the binary tensor extension (JSON cannot
    // carry it).
    let element = b"hi \xff\xfe there";
    let mut tensor = (element.len() as u32).to_le_bytes().to_vec();
    tensor.extend_from_slice(element);
    let header = format!(
        r#"{{"inputs":[{{"name":"text","shape":[1,1],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
        tensor.len()
    );
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&tensor);
    let (status_line, text) = post(
        server.http_addr,
        "/v2/models/intent/infer",
        &[("Inference-Header-Content-Length", header.len().to_string())],
        &body,
    )
    .await;
    assert_eq!(status_line, "HTTP/1.1 400 Bad Request", "{text}");
    assert!(text.contains(expected), "{text}");

    // An undecodable REST body is the caller's, and counted as such.
    let before = server.metrics().await;
    let (status_line, _) = post(
        server.http_addr,
        "/v2/models/intent/infer",
        &[],
        b"{\"inputs\":",
    )
    .await;
    assert_eq!(status_line, "HTTP/1.1 400 Bad Request");
    let after = server.metrics().await;
    let key = "oxserve_client_errors_total{protocol=\"http\",reason=\"undecodable\"}";
    assert_eq!(
        common::value(&after, key) - common::value(&before, key),
        1.0
    );

    let lines = loud.0.lock().unwrap()[quiet_before..].to_vec();
    assert!(lines.is_empty(), "WARN/ERROR lines: {lines:#?}");
}

/// A broken message on ModelStreamInfer: the requests before it are
/// answered, then the stream ends with INVALID_ARGUMENT (not INTERNAL).
async fn an_undecodable_stream_message_ends_the_stream_with_invalid_argument(
    server: &common::TestServer,
    channel: Channel,
    loud: &Loud,
) {
    let quiet_before = loud.0.lock().unwrap().len();
    let before = server.metrics().await;
    let valid = Bytes::from(seeds()[0].clone());
    let broken = Bytes::from_static(&[0x0a, 0x7f, b'm']);
    let messages = tokio_stream::iter(vec![valid, broken]);
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut answers = grpc
        .streaming(
            tonic::Request::new(messages),
            http::uri::PathAndQuery::from_static(MODEL_STREAM_INFER),
            RawCodec::<pb::ModelStreamInferResponse>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().expect("first answer");
    assert_eq!(first.error_message, "");
    let end = answers
        .message()
        .await
        .expect_err("stream ends with an error");
    assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");
    assert!(
        end.message()
            .starts_with("the request is not a valid ModelInferRequest protobuf message"),
        "{}",
        end.message()
    );
    assert!(end.metadata().get("x-oxserve-undecodable").is_none());
    let after = server.metrics().await;
    let key = "oxserve_client_errors_total{protocol=\"grpc\",reason=\"undecodable\"}";
    assert_eq!(
        common::value(&after, key) - common::value(&before, key),
        1.0
    );
    let lines = loud.0.lock().unwrap()[quiet_before..].to_vec();
    assert!(lines.is_empty(), "WARN/ERROR lines: {lines:#?}");
}

/// POSTs `body` to `path` over HTTP/1.1; (status line, body).
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}
