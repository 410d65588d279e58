//! LogSettings and TraceSetting, over gRPC and REST, change the running
//! server. This binary sets up the process's logging the way `main` does,
//! so the log level and format can be changed.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::collections::HashMap;

use common::{config, post_json, rest_get, start, test_models};
use oxserve::LogFormat;
use oxserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use oxserve_proto::inference::log_settings_request::SettingValue;
use oxserve_proto::inference::log_settings_request::setting_value::ParameterChoice as In;
use oxserve_proto::inference::log_settings_response::setting_value::ParameterChoice as Out;
use oxserve_proto::inference::{LogSettingsRequest, ServerMetadataRequest};
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn log_and_trace_settings_change_the_running_server() {
    oxserve::init_logging("warn", LogFormat::Text).unwrap();
    let server = start(config(&test_models())).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GrpcInferenceServiceClient::new(channel);
    let extensions = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner()
        .extensions;
    assert!(extensions.iter().any(|e| e == "logging"), "{extensions:?}");
    assert!(extensions.iter().any(|e| e == "trace"), "{extensions:?}");

    // gRPC: read, then raise the level the way tritonclient does.
    let now = client
        .log_settings(LogSettingsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let get = |settings: &HashMap<String, _>, key: &str| {
        settings.get(key).and_then(
            |v: &oxserve_proto::inference::log_settings_response::SettingValue| {
                v.parameter_choice.clone()
            },
        )
    };
    assert_eq!(get(&now.settings, "log_info"), Some(Out::BoolParam(false)));
    assert_eq!(
        get(&now.settings, "log_warning"),
        Some(Out::BoolParam(true))
    );
    let change = |key: &str, value: In| LogSettingsRequest {
        settings: HashMap::from([(
            key.to_string(),
            SettingValue {
                parameter_choice: Some(value),
            },
        )]),
    };
    let after = client
        .log_settings(change("log_verbose_level", In::Uint32Param(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        get(&after.settings, "log_level"),
        Some(Out::StringParam("debug".into()))
    );
    assert_eq!(
        get(&after.settings, "log_verbose_level"),
        Some(Out::Uint32Param(1))
    );
    let e = client
        .log_settings(change(
            "log_file",
            In::StringParam("/tmp/oxserve.log".into()),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // REST: the same settings, as JSON.
    let h = server.http_addr;
    let settings = rest_get(h, "/v2/logging").await;
    assert_eq!(settings.status, 200);
    assert_eq!(settings.json()["log_level"], "debug");
    let after = post_json(
        h,
        "/v2/logging",
        json!({"log_format": "json", "log_info": true, "log_verbose_level": 0}),
    )
    .await;
    assert_eq!(after.status, 200, "{}", after.json());
    assert_eq!(after.json()["log_format"], "json");
    assert_eq!(after.json()["log_level"], "info");
    let bad = post_json(h, "/v2/logging", json!({"log_format": "ISO8601"})).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("log_format"));
    // The server logs on, in the new format, and still answers.
    assert_eq!(rest_get(h, "/v2/health/ready").await.status, 200);

    // Trace settings over REST: rate and ratio are one setting.
    let traces = rest_get(h, "/v2/trace/setting").await;
    assert_eq!(traces.status, 200);
    assert_eq!(traces.json()["trace_level"], json!(["TIMESTAMPS"]));
    let after = post_json(
        h,
        "/v2/trace/setting",
        json!({"trace_rate": "4", "trace_level": ["OFF"]}),
    )
    .await;
    assert_eq!(after.status, 200, "{}", after.json());
    assert_eq!(after.json()["trace_sampling_ratio"], "0.25");
    assert_eq!(after.json()["trace_level"], json!(["OFF"]));
    let reset = post_json(h, "/v2/trace/setting", json!({"trace_rate": null})).await;
    assert_eq!(reset.json()["trace_rate"], "1");
    let bad = post_json(h, "/v2/trace/setting", json!({"trace_file": "/tmp/t.json"})).await;
    assert_eq!(bad.status, 400);
    let per_model = post_json(
        h,
        "/v2/models/add_sub/trace/setting",
        json!({"trace_rate": "2"}),
    )
    .await;
    assert_eq!(per_model.status, 400);
    assert_eq!(
        rest_get(h, "/v2/models/add_sub/trace/setting").await.status,
        200
    );
    server.stop().await.unwrap();
}
