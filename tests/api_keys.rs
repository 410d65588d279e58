//! API keys per API group (`api_keys`, `protected_groups`), over gRPC and
//! REST, against a real server: missing, wrong and right keys for every
//! group, health open by default, the key file reloaded when it changes,
//! the SDK's `api_key`, and rejections in the metrics.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{TestServer, config, start, test_models};
use oxserve::{ApiGroup, Config};
use oxserve_proto::health::HealthCheckRequest;
use oxserve_proto::health::health_client::HealthClient;
use oxserve_proto::inference as pb;
use oxserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::v1;

const KEY: &str = "k3y-for-tests_0123456789";
const MODEL: &str = "identity_fp32";

/// A key file holding `KEY`, with a comment and blank lines around it.
fn key_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("api-keys");
    std::fs::write(
        &path,
        format!("# keys for the tests\n\n{KEY}\n  \nanother-key\n"),
    )
    .unwrap();
    path
}

async fn keyed(dir: &Path, protected: Vec<ApiGroup>) -> TestServer {
    start(Config {
        api_keys: Some(key_file(dir)),
        protected_groups: protected,
        ..config(&test_models())
    })
    .await
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn request<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

/// One call of a method of `group`; `Ok` when the server answered it.
async fn call(channel: &Channel, group: ApiGroup, key: Option<&str>) -> Result<(), tonic::Status> {
    let mut inference = GrpcInferenceServiceClient::new(channel.clone());
    match group {
        ApiGroup::Health => {
            inference
                .server_live(request(pb::ServerLiveRequest {}, key))
                .await?;
        }
        ApiGroup::Metadata => {
            inference
                .server_metadata(request(pb::ServerMetadataRequest {}, key))
                .await?;
        }
        ApiGroup::Inference => {
            let input = pb::model_infer_request::InferInputTensor {
                name: "INPUT0".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1],
                ..Default::default()
            };
            let message = pb::ModelInferRequest {
                model_name: MODEL.into(),
                inputs: vec![input],
                raw_input_contents: vec![1f32.to_le_bytes().to_vec().into()],
                ..Default::default()
            };
            inference.model_infer(request(message, key)).await?;
        }
        ApiGroup::SharedMemory => {
            inference
                .system_shared_memory_status(request(Default::default(), key))
                .await?;
        }
        ApiGroup::ModelConfig => {
            let message = pb::ModelConfigRequest {
                name: MODEL.into(),
                ..Default::default()
            };
            inference.model_config(request(message, key)).await?;
        }
        ApiGroup::ModelRepository => {
            inference
                .repository_index(request(Default::default(), key))
                .await?;
        }
        ApiGroup::Statistics => {
            inference
                .model_statistics(request(Default::default(), key))
                .await?;
        }
        ApiGroup::Trace => {
            inference
                .trace_setting(request(Default::default(), key))
                .await?;
        }
        ApiGroup::Logging => {
            inference
                .log_settings(request(Default::default(), key))
                .await?;
        }
    }
    Ok(())
}

fn code(result: Result<(), tonic::Status>) -> Code {
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// What a call of `group` answers once past the key check. LogSettings
/// answers FAILED_PRECONDITION in-process (the test harness, not oxserve,
/// owns logging): that answer comes from its handler, so the call got in.
fn admitted(group: ApiGroup) -> Code {
    match group {
        ApiGroup::Logging => Code::FailedPrecondition,
        _ => Code::Ok,
    }
}

#[tokio::test]
async fn every_group_takes_the_right_key_and_refuses_a_missing_or_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = keyed(dir.path(), ApiGroup::default_protected()).await;
    let channel = channel(server.addr).await;
    for group in ApiGroup::ALL {
        let right = call(&channel, group, Some(KEY)).await;
        assert_eq!(code(right), admitted(group), "{group} with the right key");
        if group == ApiGroup::Health {
            // Open by default: probes cannot send keys.
            assert_eq!(code(call(&channel, group, None).await), Code::Ok);
            assert_eq!(code(call(&channel, group, Some("wrong")).await), Code::Ok);
            continue;
        }
        let missing = call(&channel, group, None).await.unwrap_err();
        assert_eq!(
            missing.code(),
            Code::Unauthenticated,
            "{group}: {missing:?}"
        );
        assert!(missing.message().contains(group.as_str()), "{missing:?}");
        let wrong = call(&channel, group, Some("wrong-key")).await.unwrap_err();
        assert_eq!(wrong.code(), Code::PermissionDenied, "{group}: {wrong:?}");
        assert!(!wrong.message().contains("wrong-key"), "{wrong:?}");
    }
    // The second key of the file works too.
    assert_eq!(
        code(call(&channel, ApiGroup::Inference, Some("another-key")).await),
        Code::Ok
    );

    // grpc.health.v1 is health; reflection is metadata.
    let mut health = HealthClient::new(channel.clone());
    let check = HealthCheckRequest {
        service: String::new(),
    };
    health.check(request(check, None)).await.unwrap();
    let list = || v1::ServerReflectionRequest {
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ..Default::default()
    };
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let refused = reflection
        .server_reflection_info(request(tokio_stream::iter([list()]), None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut answers = reflection
        .server_reflection_info(request(tokio_stream::iter([list()]), Some(KEY)))
        .await
        .unwrap()
        .into_inner();
    assert!(answers.next().await.unwrap().is_ok());

    // Streaming inference is checked when the stream opens.
    let mut inference = GrpcInferenceServiceClient::new(channel.clone());
    let refused = inference
        .model_stream_infer(request(tokio_stream::empty(), None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // A method no service has needs a key too, before it is found missing.
    let mut unknown = tonic::client::Grpc::new(channel);
    unknown.ready().await.unwrap();
    let refused = unknown
        .unary::<_, pb::ServerLiveResponse, _>(
            request(pb::ServerLiveRequest {}, None),
            "/inference.GRPCInferenceService/NoSuchMethod"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Every refusal is counted, by group and reason.
    let metrics = server.metrics().await;
    let count = |group: &str, reason: &str| {
        metrics
            .get(&format!(
                "oxserve_auth_rejections_total{{group=\"{group}\",reason=\"{reason}\"}}"
            ))
            .copied()
    };
    assert_eq!(count("inference", "missing"), Some(2.0), "{metrics:?}");
    assert_eq!(count("inference", "wrong"), Some(1.0));
    assert_eq!(
        count("metadata", "missing"),
        Some(2.0),
        "ServerMetadata and reflection"
    );
    assert_eq!(count("other", "missing"), Some(1.0));
    assert_eq!(count("health", "missing"), None, "health is not protected");
    assert_eq!(
        count("logging", "malformed"),
        Some(0.0),
        "shown from the start"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn protected_health_and_the_sdk_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(dir.path());
    // Start without health protected (the harness waits on health without
    // a key), then check a server that protects everything.
    let server = common::spawn(Config {
        api_keys: Some(path),
        protected_groups: ApiGroup::ALL.to_vec(),
        ..config(&test_models())
    })
    .await;
    let without = oxserve_client::Client::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let error = without.health_check("").await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unauthenticated));
    let error = without.is_live().await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unauthenticated));

    let client = oxserve_client::Client::builder(format!("http://{}", server.addr))
        .api_key(KEY)
        .connect()
        .await
        .unwrap();
    // Watch (health), unary calls and a stream all carry the key.
    client
        .wait_until_serving(common::INFERENCE_SERVICE, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(client.is_live().await.unwrap());
    assert!(client.health_check("").await.unwrap().is_serving());
    client.server_metadata().await.unwrap();
    let response = client
        .infer(MODEL)
        .input("INPUT0", [1, 1], &[2.5f32])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.try_output("OUTPUT0").unwrap().as_f32().unwrap(),
        [2.5]
    );
    let (sender, mut answers) = client.stream_infer().unwrap();
    sender
        .send(client.infer(MODEL).input("INPUT0", [1, 1], &[4.0f32]))
        .await
        .unwrap();
    let answer = answers.next().await.unwrap().unwrap();
    assert_eq!(
        answer.try_output("OUTPUT0").unwrap().as_f32().unwrap(),
        [4.0]
    );

    let wrong = oxserve_client::Client::builder(format!("http://{}", server.addr))
        .api_key("not-the-key")
        .connect()
        .await
        .unwrap();
    assert_eq!(
        wrong.is_live().await.unwrap_err().code(),
        Some(Code::PermissionDenied)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_changed_key_file_is_reloaded_and_a_broken_one_keeps_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = keyed(dir.path(), vec![ApiGroup::Inference]).await;
    let path = dir.path().join("api-keys");
    let channel = channel(server.addr).await;
    let answers = |key: &'static str| {
        let channel = channel.clone();
        async move { code(call(&channel, ApiGroup::Inference, Some(key)).await) }
    };
    assert_eq!(answers(KEY).await, Code::Ok);

    // Rotated, as a Kubernetes Secret is: a new file swapped in.
    let next = dir.path().join("api-keys.next");
    std::fs::write(&next, "rotated-key\n").unwrap();
    std::fs::rename(&next, &path).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while answers("rotated-key").await != Code::Ok {
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answers(KEY).await, Code::PermissionDenied, "rotated out");

    // A broken file (a key with a space) and then an empty one: logged,
    // and the keys in force stay. Two reload periods each.
    std::fs::write(&path, "rotated key\n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(answers("rotated-key").await, Code::Ok);
    std::fs::write(&path, "").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(answers("rotated-key").await, Code::Ok);
    server.stop().await.unwrap();
}

/// Sends `method path` over HTTP/1.1 with an optional key; returns the
/// status code, the headers (lower-cased) and the body.
async fn rest(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

#[tokio::test]
async fn rest_routes_answer_401_and_403_by_the_same_groups() {
    let dir = tempfile::tempdir().unwrap();
    let server = keyed(dir.path(), ApiGroup::default_protected()).await;
    let addr = server.http_addr;
    let infer = r#"{"inputs":[{"name":"INPUT0","shape":[1,1],"datatype":"FP32","data":[1.5]}]}"#;
    let cases = [
        ("GET", "/v2".to_string(), "", "metadata"),
        ("GET", format!("/v2/models/{MODEL}"), "", "metadata"),
        (
            "POST",
            format!("/v2/models/{MODEL}/infer"),
            infer,
            "inference",
        ),
        (
            "GET",
            format!("/v2/models/{MODEL}/config"),
            "",
            "model-config",
        ),
        ("GET", "/v2/models/stats".to_string(), "", "statistics"),
        (
            "GET",
            "/v2/systemsharedmemory/status".to_string(),
            "",
            "shared-memory",
        ),
        (
            "POST",
            "/v2/repository/index".to_string(),
            "",
            "model-repository",
        ),
        ("GET", "/v2/logging".to_string(), "", "logging"),
        ("GET", "/v2/trace/setting".to_string(), "", "trace"),
    ];
    for (method, path, body, group) in &cases {
        let (status, head, text) = rest(addr, method, path, None, body).await;
        assert_eq!(status, 401, "{path}: {text}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(error["error"].as_str().unwrap().contains(group), "{text}");
        let (status, _, text) = rest(addr, method, path, Some("wrong-key"), body).await;
        assert_eq!(status, 403, "{path}: {text}");
        assert!(!text.contains("wrong-key"));
        let (status, _, text) = rest(addr, method, path, Some(KEY), body).await;
        // In-process, logging is the harness's: its handler answers 400.
        let admitted = if *group == "logging" { 400 } else { 200 };
        assert_eq!(status, admitted, "{path}: {text}");
    }
    // Health is open.
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/identity_fp32/ready",
    ] {
        let (status, _, text) = rest(addr, "GET", path, None, "").await;
        assert_eq!(status, 200, "{path}: {text}");
    }
    // A path of no route needs a key before it is found missing.
    assert_eq!(rest(addr, "GET", "/v2/nothing", None, "").await.0, 401);
    assert_eq!(rest(addr, "GET", "/v2/nothing", Some(KEY), "").await.0, 404);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_key_file_nothing_is_checked() {
    let server = start(Config {
        protected_groups: ApiGroup::ALL.to_vec(),
        ..config(&test_models())
    })
    .await;
    let channel = channel(server.addr).await;
    for group in ApiGroup::ALL {
        let answer = code(call(&channel, group, None).await);
        assert_eq!(answer, admitted(group), "{group}");
    }
    server.stop().await.unwrap();
}

#[test]
fn settings_name_unknown_groups_and_unusable_key_files() {
    let repository = test_models();
    let figment = |pairs: serde_json::Value| {
        let mut overrides = serde_json::json!({ "model_repository": repository });
        for (k, v) in pairs.as_object().unwrap() {
            overrides[k] = v.clone();
        }
        Config::from_figment(&Config::figment(None, overrides))
    };
    let error = figment(serde_json::json!({ "protected_groups": ["inference", "infer"] }))
        .unwrap_err()
        .to_string();
    assert!(error.contains("protected_groups"), "{error}");
    assert!(error.contains("'infer'"), "{error}");
    assert!(error.contains("model-repository"), "{error}");

    // The environment's comma-separated form.
    let config = figment(serde_json::json!({ "protected_groups": "inference, logging" })).unwrap();
    assert_eq!(
        config.protected_groups,
        [ApiGroup::Inference, ApiGroup::Logging]
    );
    let config = figment(serde_json::json!({ "protected_groups": "" })).unwrap();
    assert!(config.protected_groups.is_empty());
    let config = figment(serde_json::json!({})).unwrap();
    assert_eq!(config.protected_groups, ApiGroup::default_protected());
    assert_eq!(config.api_keys, None);

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let error = figment(serde_json::json!({ "api_keys": missing }))
        .unwrap_err()
        .to_string();
    assert!(error.contains("api_keys"), "{error}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let error = figment(serde_json::json!({ "api_keys": empty }))
        .unwrap_err()
        .to_string();
    assert!(error.contains("holds no key"), "{error}");
}
