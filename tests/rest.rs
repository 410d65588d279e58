//! The KServe v2 REST API against a real server: every endpoint, JSON and
//! binary tensors, errors with their HTTP statuses, metrics by protocol,
//! and the drain.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use common::{
    config, example_models, f32_bytes, post_json, rest, rest_get, slow_call, start, test_models,
    value,
};
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_metadata() {
    let server = start(config(&test_models())).await;
    let a = server.http_addr;
    let live = rest_get(a, "/v2/health/live").await;
    assert_eq!((live.status, live.json()), (200, json!({"live": true})));
    let ready = rest_get(a, "/v2/health/ready").await;
    assert_eq!((ready.status, ready.json()), (200, json!({"ready": true})));

    let meta = rest_get(a, "/v2").await.json();
    assert_eq!(meta["name"], "oxserve");
    let extensions: Vec<&str> = meta["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for wanted in [
        "binary_tensor_data",
        "system_shared_memory",
        "trace",
        "logging",
        "statistics",
        "model_configuration",
    ] {
        assert!(extensions.contains(&wanted), "{wanted} in {extensions:?}");
    }

    let model = rest_get(a, "/v2/models/add_sub").await;
    assert_eq!(model.status, 200);
    let model = model.json();
    assert_eq!(model["platform"], "onnxruntime_onnx");
    assert_eq!(model["inputs"][0]["datatype"], "FP32");
    let versioned = rest_get(a, "/v2/models/versioned/versions/1").await;
    assert_eq!(versioned.status, 200, "{}", versioned.json());

    assert_eq!(rest_get(a, "/v2/models/add_sub/ready").await.status, 200);
    assert_eq!(
        rest_get(a, "/v2/models/add_sub/versions/1/ready")
            .await
            .status,
        200
    );
    let not_ready = rest_get(a, "/v2/models/no_such_model/ready").await;
    assert_eq!(not_ready.status, 400);
    assert_eq!(not_ready.json()["ready"], false);

    let config = rest_get(a, "/v2/models/add_sub/config").await;
    assert_eq!(config.status, 200);
    let config = config.json();
    assert_eq!(config["name"], "add_sub");
    assert_eq!(config["platform"], "onnxruntime_onnx");
    assert!(config["max_batch_size"].is_number(), "{config}");
    assert!(config["input"][0]["dims"][0].is_number(), "{config}");

    // HTTP/2 without TLS (prior knowledge) is served too.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let response = h2
        .request(
            http::Request::get(format!("http://{a}/v2/health/ready"))
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);

    let stats = rest_get(a, "/v2/models/add_sub/stats").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["model_stats"][0]["name"], "add_sub");
    let all = rest_get(a, "/v2/models/stats").await.json();
    assert!(all["model_stats"].as_array().unwrap().len() > 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_readme_example_classifies_a_greeting() {
    let server = start(config(&example_models())).await;
    let answer = post_json(
        server.http_addr,
        "/v2/models/intent/infer",
        json!({
            "id": "readme",
            "inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["Hi, how are you?"]}],
            "outputs": [{"name": "label"}]
        }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = answer.json();
    assert_eq!(body["id"], "readme");
    assert_eq!(body["model_name"], "intent");
    assert_eq!(body["model_version"], "1");
    assert_eq!(
        body["outputs"],
        json!([{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["greeting"]}])
    );
    // Where the time went, as over gRPC.
    for parameter in ["queue_ns", "compute_ns", "batch_size", "instance"] {
        assert!(
            body["parameters"][parameter].is_i64(),
            "{parameter}: {body}"
        );
    }
    assert!(body["parameters"]["served_by"].is_string(), "{body}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn json_and_binary_tensors_give_the_same_answer_as_grpc() {
    let server = start(config(&test_models())).await;
    let a: Vec<f32> = (1..=16).map(|i| i as f32).collect();
    let b = [0.5f32; 16];
    let grpc = server
        .client
        .infer("add_sub")
        .input("INPUT0", [1, 16], &a)
        .input("INPUT1", [1, 16], &b)
        .send()
        .await
        .unwrap();
    let grpc_sum = grpc.output("OUTPUT0").unwrap().as_f32().unwrap().to_vec();

    // JSON in, JSON out; nested arrays are flattened row-major.
    let answer = post_json(
        server.http_addr,
        "/v2/models/add_sub/infer",
        json!({"inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [a[..8], a[8..]]},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": b}
        ]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let outputs = answer.json()["outputs"].clone();
    let sum: Vec<f32> = outputs
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "OUTPUT0")
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(sum, grpc_sum);

    // Binary in (one input binary, one JSON), binary out for one output.
    let header = serde_json::to_vec(&json!({
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": b}
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}, {"name": "OUTPUT1"}]
    }))
    .unwrap();
    let mut body = header.clone();
    body.extend(f32_bytes(&a));
    let length = header.len().to_string();
    let answer = rest(
        server.http_addr,
        "POST",
        "/v2/models/add_sub/infer",
        &[
            ("content-type", "application/octet-stream"),
            ("inference-header-content-length", &length),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 200);
    let json_length: usize = answer.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&answer.body[..json_length]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 64);
    assert!(head["outputs"][0].get("data").is_none(), "{head}");
    assert!(head["outputs"][1]["data"].is_array(), "{head}");
    assert_eq!(&answer.body[json_length..], &f32_bytes(&grpc_sum)[..]);

    // "binary_data_output": every output after the JSON, in output order;
    // binary bytes left over after the inputs are an error.
    let every = post_json(
        server.http_addr,
        "/v2/models/add_sub/infer",
        json!({"parameters": {"binary_data_output": true}, "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": a},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": b}
        ]}),
    )
    .await;
    assert_eq!(every.status, 200);
    let json_length: usize = every.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(every.body.len(), json_length + 2 * 64);
    let mut extra = header.clone();
    extra.extend(f32_bytes(&a));
    extra.extend([0u8; 3]);
    let answer = rest(
        server.http_addr,
        "POST",
        "/v2/models/add_sub/infer",
        &[("inference-header-content-length", &length)],
        extra,
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap().contains("3 bytes"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_datatype_round_trips_as_json() {
    let server = start(config(&test_models())).await;
    for (datatype, data) in [
        ("BOOL", json!([true, false, true])),
        ("UINT8", json!([0, 255, 7])),
        ("UINT16", json!([0, 65535, 7])),
        ("UINT32", json!([0, 4294967295u32, 7])),
        ("UINT64", json!([0, 18446744073709551615u64, 7])),
        ("INT8", json!([-128, 127, 0])),
        ("INT16", json!([-32768, 32767, 0])),
        ("INT32", json!([-2147483648, 2147483647, 0])),
        (
            "INT64",
            json!([-9223372036854775807i64, 9223372036854775807i64, 0]),
        ),
        ("FP16", json!([0.5, -2.0, 1024.0])),
        ("BF16", json!([0.5, -2.0, 1024.0])),
        ("FP32", json!([0.5, -2.0, 1e10])),
        ("FP64", json!([0.5, -2.0, 1e300])),
        ("BYTES", json!(["a", "", "Ünïcödé 🙂"])),
    ] {
        let model = format!("identity_{}", datatype.to_lowercase());
        let answer = post_json(
            server.http_addr,
            &format!("/v2/models/{model}/infer"),
            json!({"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": datatype, "data": data}]}),
        )
        .await;
        assert_eq!(answer.status, 200, "{datatype}: {}", answer.json());
        let out = &answer.json()["outputs"][0];
        assert_eq!(out["datatype"], datatype);
        assert_eq!(out["shape"], json!([1, 3]));
        assert_eq!(out["data"], data, "{datatype}");
    }
    server.stop().await.unwrap();
}

/// The test models with one instance each, so that a request queues
/// behind one that holds the model busy.
fn one_instance() -> oxserve::Config {
    oxserve::Config {
        instances: oxserve::InstanceCount::Fixed(1),
        ..config(&test_models())
    }
}

#[tokio::test]
async fn errors_carry_the_status_of_their_grpc_code() {
    let server = start(one_instance()).await;
    let a = server.http_addr;
    let infer = |path: &'static str, body: Value| post_json(a, path, body);
    let one = |name: &str, datatype: &str, shape: Value, data: Value| json!({"id": "e", "inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]});
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        // NOT_FOUND
        (
            "/v2/models/no_such_model/infer",
            one("INPUT0", "FP32", json!([1, 1]), json!([1])),
            404,
            "no_such_model",
        ),
        (
            "/v2/models/identity_fp32/versions/9/infer",
            one("INPUT0", "FP32", json!([1, 1]), json!([1])),
            404,
            "version 9",
        ),
        // INVALID_ARGUMENT, from the core
        (
            "/v2/models/identity_fp32/infer",
            one("INPUT0", "FP64", json!([1, 1]), json!([1])),
            400,
            "expects 'FP32'",
        ),
        (
            "/v2/models/identity_fp32/infer",
            one("INPUT0", "FP32", json!([1, 2]), json!([1])),
            400,
            "Expected 8 bytes, got 4",
        ),
        (
            "/v2/models/identity_fp32/infer",
            one("NOPE", "FP32", json!([1, 1]), json!([1])),
            400,
            "NOPE",
        ),
        (
            "/v2/models/identity_fp32/infer",
            one("INPUT0", "FP99", json!([1, 1]), json!([1])),
            400,
            "unknown data-type 'FP99'",
        ),
        // INVALID_ARGUMENT, from the JSON
        (
            "/v2/models/identity_uint8/infer",
            one("INPUT0", "UINT8", json!([1, 1]), json!([256])),
            400,
            "out of range",
        ),
        (
            "/v2/models/identity_fp32/infer",
            json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32"}]}),
            400,
            "has no data",
        ),
        // UNAVAILABLE: the model failed to load.
        (
            "/v2/models/broken/infer",
            one("INPUT0", "FP32", json!([1, 1]), json!([1])),
            503,
            "broken",
        ),
    ];
    for (path, body, status, needle) in cases {
        let answer = infer(path, body.clone()).await;
        let json = answer.json();
        let shown = json.to_string();
        let message = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", &shown[..shown.len().min(300)]));
        assert_eq!(answer.status, status, "{path} {body}: {message}");
        assert!(message.contains(needle), "{message} lacks {needle}");
    }
    // The request id prefixes the message, as over gRPC.
    let answer = infer(
        "/v2/models/no_such_model/infer",
        one("INPUT0", "FP32", json!([1, 1]), json!([1])),
    )
    .await;
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("[request id: e] ")
    );

    // DEADLINE_EXCEEDED: a timeout of 1 ms for a request queued behind
    // one that takes a quarter of a second.
    let busy = slow_call(&server.client);
    server
        .wait_for_metric(
            "oxserve_inflight_requests{model=\"slow\",version=\"1\"}",
            1.0,
        )
        .await;
    let late = post_json(
        a,
        "/v2/models/slow/infer",
        json!({"parameters": {"timeout": 1000}, "inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}),
    )
    .await;
    assert_eq!(late.status, 504);
    assert!(late.json()["error"].as_str().unwrap().contains("deadline"));
    busy.await.unwrap().unwrap();

    let malformed = rest(
        a,
        "POST",
        "/v2/models/identity_fp32/infer",
        &[],
        "{not json",
    )
    .await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.json()["error"].is_string());
    // This process's logging is not oxserve's (no init_logging): log
    // settings say so rather than pretend.
    let logging = rest_get(a, "/v2/logging").await;
    assert_eq!(logging.status, 400);
    assert!(
        logging.json()["error"]
            .as_str()
            .unwrap()
            .contains("not set up by oxserve")
    );
    let nowhere = rest_get(a, "/v3/models").await;
    assert_eq!(nowhere.status, 404);
    assert!(nowhere.json()["error"].is_string());
    let metadata = rest_get(a, "/v2/models/no_such_model").await;
    assert_eq!(metadata.status, 404);
    assert!(
        metadata.json()["error"]
            .as_str()
            .unwrap()
            .contains("no_such_model")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_each_protocol() {
    let server = start(config(&test_models())).await;
    let body =
        json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]});
    for _ in 0..2 {
        let answer = post_json(
            server.http_addr,
            "/v2/models/identity_fp32/infer",
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    server
        .client
        .infer("identity_fp32")
        .input("INPUT0", [1, 1], &[1.0f32])
        .send()
        .await
        .unwrap();
    let m = server.metrics().await;
    let key = |protocol: &str| {
        format!(
            "oxserve_requests_total{{model=\"identity_fp32\",version=\"1\",protocol=\"{protocol}\",code=\"OK\"}}"
        )
    };
    assert_eq!(value(&m, &key("http")), 2.0);
    assert_eq!(value(&m, &key("grpc")), 1.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_rest_request_in_flight_at_shutdown_is_answered() {
    let mut server = start(one_instance()).await;
    // Hold the model busy, so the REST request queues behind it.
    let busy = slow_call(&server.client);
    let inflight = "oxserve_inflight_requests{model=\"slow\",version=\"1\"}";
    server.wait_for_metric(inflight, 1.0).await;
    let n = 8usize;
    let request = json!({"inputs": [{"name": "INPUT0", "shape": [n, n], "datatype": "FP32", "data": vec![0.0f32; n * n]}]});
    let addr = server.http_addr;
    let in_flight =
        tokio::spawn(async move { post_json(addr, "/v2/models/slow/infer", request).await });
    server.wait_for_metric(inflight, 2.0).await;
    server.begin_shutdown();
    busy.await.unwrap().unwrap();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    server.join().await.unwrap();
}

#[tokio::test]
async fn a_body_over_the_message_limit_is_refused_before_it_is_read() {
    let server = start(oxserve::Config {
        max_message_size: 4096,
        ..config(&test_models())
    })
    .await;
    let answer = rest(
        server.http_addr,
        "POST",
        "/v2/models/identity_fp32/infer",
        &[],
        vec![b' '; 8192],
    )
    .await;
    assert_eq!(answer.status, 413);
    assert!(answer.json()["error"].is_string());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_repository_endpoints_load_and_unload_models() {
    let mut cfg = config(&test_models());
    cfg.model_control_mode = oxserve::ControlMode::Explicit;
    cfg.load_model = vec!["identity_fp32".into()];
    let server = start(cfg).await;
    let h = server.http_addr;
    let index = rest(h, "POST", "/v2/repository/index", &[], "").await;
    assert_eq!(index.status, 200, "{}", index.json());
    let ready: Vec<Value> = post_json(h, "/v2/repository/index", json!({"ready": true}))
        .await
        .json()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!(ready[0]["name"], "identity_fp32");
    assert_eq!(ready[0]["state"], "READY");

    assert_eq!(
        rest_get(h, "/v2/models/identity_int8/ready").await.status,
        400
    );
    let loaded = rest(
        h,
        "POST",
        "/v2/repository/models/identity_int8/load",
        &[],
        "",
    )
    .await;
    assert_eq!(loaded.status, 200, "{}", loaded.json());
    assert_eq!(
        rest_get(h, "/v2/models/identity_int8/ready").await.status,
        200
    );
    let unloaded = post_json(
        h,
        "/v2/repository/models/identity_int8/unload",
        json!({"parameters": {"unload_dependents": false}}),
    )
    .await;
    assert_eq!(unloaded.status, 200, "{}", unloaded.json());
    assert_eq!(
        rest_get(h, "/v2/models/identity_int8/ready").await.status,
        400
    );

    let unknown = rest(
        h,
        "POST",
        "/v2/repository/models/no_such_model/load",
        &[],
        "",
    )
    .await;
    assert!(unknown.status >= 400, "{}", unknown.status);
    assert!(
        unknown.json()["error"]
            .as_str()
            .unwrap()
            .contains("no_such_model")
    );
    let bad_file = post_json(
        h,
        "/v2/repository/models/identity_int8/load",
        json!({"parameters": {"file:1/model.onnx": "not base64!"}}),
    )
    .await;
    assert_eq!(bad_file.status, 400);
    server.stop().await.unwrap();
}
