//! Inference through the real server and the SDK: every datatype, raw and
//! typed contents, BYTES edge cases, several inputs and outputs, versions.

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use common::{config, example_models, start, test_models};
use oxserve_client::pb;
use tonic::Code;

/// Sends `raw` (already in wire encoding) through `identity_<dt>` and checks
/// the output comes back byte for byte with the same shape.
async fn round_trip(client: &oxserve_client::Client, dt: &str, shape: &[i64], raw: Vec<u8>) {
    let model = format!("identity_{}", dt.to_lowercase());
    let response = client
        .infer(&model)
        .input_raw(
            "INPUT0",
            dt.parse::<oxserve_client::DataType>().unwrap(),
            shape,
            raw.clone(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{dt}: {e}"));
    let out = response.output("OUTPUT0").expect("OUTPUT0");
    assert_eq!(out.datatype(), dt);
    assert_eq!(out.shape(), shape, "{dt}");
    assert_eq!(out.raw().expect("raw output"), &raw[..], "{dt}");
}

#[tokio::test]
async fn every_datatype_round_trips_raw() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    round_trip(c, "BOOL", &[2, 3], vec![1, 0, 1, 1, 0, 0]).await;
    round_trip(c, "UINT8", &[1, 4], vec![0, 1, 254, 255]).await;
    round_trip(c, "INT8", &[1, 3], vec![0x80, 0xff, 0x7f]).await;
    for (dt, size) in [
        ("UINT16", 2),
        ("INT16", 2),
        ("FP16", 2),
        ("BF16", 2),
        ("UINT32", 4),
        ("INT32", 4),
        ("FP32", 4),
        ("UINT64", 8),
        ("INT64", 8),
        ("FP64", 8),
    ] {
        // Distinct bytes in every position so any reordering shows; NaN and
        // infinity patterns pass through float types untouched.
        let raw: Vec<u8> = (0..3 * 2 * size).map(|i| (i * 37 + 11) as u8).collect();
        round_trip(c, dt, &[3, 2], raw).await;
    }
    // Zero rows is a valid tensor too.
    round_trip(c, "FP32", &[0, 5], vec![]).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn typed_readers_decode_what_the_server_returns() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let r = c
        .infer("identity_int64")
        .input("INPUT0", [1, 3], &[-1i64, 0, i64::MAX])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.output("OUTPUT0").unwrap().as_i64().unwrap(),
        vec![-1, 0, i64::MAX]
    );
    let r = c
        .infer("identity_bool")
        .input("INPUT0", [1, 2], &[true, false])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.output("OUTPUT0").unwrap().as_bool().unwrap(),
        vec![true, false]
    );
    let r = c
        .infer("identity_uint16")
        .input("INPUT0", [2, 1], &[7u16, 65535])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.output("OUTPUT0").unwrap().as_u16().unwrap(),
        vec![7, 65535]
    );
    let r = c
        .infer("identity_fp64")
        .input("INPUT0", [1, 2], &[0.25f64, -3.5])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.output("OUTPUT0").unwrap().as_f64().unwrap(),
        vec![0.25, -3.5]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bytes_round_trip_exactly_including_empty_and_non_utf8() {
    let server = start(config(&test_models())).await;
    let elements: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"hello".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        vec![0; 3],
        "naïve ☃".as_bytes().to_vec(),
        vec![b'x'; 70_000],
    ];
    let r = server
        .client
        .infer("identity_bytes")
        .input_bytes("INPUT0", [2, 3], &elements)
        .send()
        .await
        .unwrap();
    let out = r.output("OUTPUT0").unwrap();
    assert_eq!(out.datatype(), "BYTES");
    assert_eq!(out.shape(), &[2, 3]);
    assert_eq!(out.as_bytes().unwrap(), elements);
    server.stop().await.unwrap();
}

/// Builds a request with typed `contents` for `identity_<dt>`.
fn typed_request(
    dt: &str,
    shape: &[i64],
    contents: pb::InferTensorContents,
) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: format!("identity_{}", dt.to_lowercase()),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "INPUT0".into(),
            datatype: dt.into(),
            shape: shape.to_vec(),
            contents: Some(contents),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn typed_contents_are_accepted_for_every_typed_datatype() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let cases: Vec<(&str, pb::InferTensorContents, Vec<u8>)> = vec![
        (
            "BOOL",
            pb::InferTensorContents {
                bool_contents: vec![true, false],
                ..Default::default()
            },
            vec![1, 0],
        ),
        (
            "UINT8",
            pb::InferTensorContents {
                uint_contents: vec![3, 250],
                ..Default::default()
            },
            vec![3, 250],
        ),
        (
            "UINT16",
            pb::InferTensorContents {
                uint_contents: vec![3, 60000],
                ..Default::default()
            },
            [3u16.to_le_bytes(), 60000u16.to_le_bytes()].concat(),
        ),
        (
            "UINT32",
            pb::InferTensorContents {
                uint_contents: vec![3, u32::MAX],
                ..Default::default()
            },
            [3u32.to_le_bytes(), u32::MAX.to_le_bytes()].concat(),
        ),
        (
            "UINT64",
            pb::InferTensorContents {
                uint64_contents: vec![3, u64::MAX],
                ..Default::default()
            },
            [3u64.to_le_bytes(), u64::MAX.to_le_bytes()].concat(),
        ),
        (
            "INT8",
            pb::InferTensorContents {
                int_contents: vec![-3, 100],
                ..Default::default()
            },
            vec![253, 100],
        ),
        (
            "INT16",
            pb::InferTensorContents {
                int_contents: vec![-3, 30000],
                ..Default::default()
            },
            [(-3i16).to_le_bytes(), 30000i16.to_le_bytes()].concat(),
        ),
        (
            "INT32",
            pb::InferTensorContents {
                int_contents: vec![-3, i32::MIN],
                ..Default::default()
            },
            [(-3i32).to_le_bytes(), i32::MIN.to_le_bytes()].concat(),
        ),
        (
            "INT64",
            pb::InferTensorContents {
                int64_contents: vec![-3, i64::MIN],
                ..Default::default()
            },
            [(-3i64).to_le_bytes(), i64::MIN.to_le_bytes()].concat(),
        ),
        (
            "FP32",
            pb::InferTensorContents {
                fp32_contents: vec![1.5, -0.0],
                ..Default::default()
            },
            [1.5f32.to_le_bytes(), (-0.0f32).to_le_bytes()].concat(),
        ),
        (
            "FP64",
            pb::InferTensorContents {
                fp64_contents: vec![1.5, 1e300],
                ..Default::default()
            },
            [1.5f64.to_le_bytes(), 1e300f64.to_le_bytes()].concat(),
        ),
        (
            "BYTES",
            pb::InferTensorContents {
                bytes_contents: vec![bytes::Bytes::new(), bytes::Bytes::from_static(&[0xff, 0])],
                ..Default::default()
            },
            vec![0, 0, 0, 0, 2, 0, 0, 0, 0xff, 0],
        ),
    ];
    for (dt, contents, expected_raw) in cases {
        let response = c
            .infer_raw(typed_request(dt, &[1, 2], contents))
            .await
            .unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(
            response.raw_output_contents.len(),
            1,
            "{dt}: outputs travel raw"
        );
        assert_eq!(
            &response.raw_output_contents[0][..],
            &expected_raw[..],
            "{dt}"
        );
        assert_eq!(response.outputs[0].shape, vec![1, 2], "{dt}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn several_inputs_and_a_subset_of_outputs() {
    let server = start(config(&test_models())).await;
    let a: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..32).map(|i| (i * 2) as f32).collect();
    let r = server
        .client
        .infer("add_sub")
        .id("req-42")
        .input("INPUT1", [2, 16], &b)
        .input("INPUT0", [2, 16], &a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.id(), "req-42");
    assert_eq!(r.model_name(), "add_sub");
    assert_eq!(r.model_version(), "1");
    let names: Vec<&str> = r.outputs().map(|o| o.name()).collect();
    assert_eq!(names, ["OUTPUT0", "OUTPUT1"]);
    let sum = r.output("OUTPUT0").unwrap().as_f32().unwrap();
    let diff = r.output("OUTPUT1").unwrap().as_f32().unwrap();
    for i in 0..32 {
        assert_eq!(sum[i], a[i] + b[i]);
        assert_eq!(diff[i], a[i] - b[i]);
    }

    let r = server
        .client
        .infer("add_sub")
        .input("INPUT0", [2, 16], &a)
        .input("INPUT1", [2, 16], &b)
        .output("OUTPUT1")
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = r.outputs().map(|o| o.name()).collect();
    assert_eq!(names, ["OUTPUT1"]);
    assert_eq!(r.as_proto().raw_output_contents.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_highest_version_answers_unless_one_is_named() {
    let server = start(config(&test_models())).await;
    let c = &server.client;
    let call = |version: Option<&'static str>| async move {
        let mut b = c.infer("versioned").input("INPUT0", [1, 1], &[10.0f32]);
        if let Some(v) = version {
            b = b.version(v);
        }
        b.send().await
    };
    let r = call(None).await.unwrap();
    assert_eq!(r.model_version(), "3");
    assert_eq!(r.output("OUTPUT0").unwrap().as_f32().unwrap(), vec![13.0]);
    let r = call(Some("1")).await.unwrap();
    assert_eq!(r.model_version(), "1");
    assert_eq!(r.output("OUTPUT0").unwrap().as_f32().unwrap(), vec![11.0]);
    let e = call(Some("2")).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    assert!(
        e.to_string().contains("versioned") && e.to_string().contains("1, 3"),
        "{e}"
    );

    let meta = c.model_metadata("versioned", None).await.unwrap();
    assert_eq!(meta.versions, vec!["1", "3"]);
    assert!(c.model_ready("versioned", Some("1")).await.unwrap());
    assert!(!c.model_ready("versioned", Some("2")).await.unwrap());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mlp_batches_rows_independently() {
    let server = start(config(&example_models())).await;
    let rows: Vec<Vec<f32>> = (0..3)
        .map(|r| {
            (0..784)
                .map(|i| ((i * (r + 1)) % 17) as f32 / 17.0)
                .collect()
        })
        .collect();
    let batch: Vec<f32> = rows.concat();
    let r = server
        .client
        .infer("mlp")
        .input("input", [3, 784], &batch)
        .send()
        .await
        .unwrap();
    let out = r.output("output").unwrap();
    assert_eq!(out.shape(), &[3, 10]);
    let scores = out.as_f32().unwrap();
    for (i, row) in rows.iter().enumerate() {
        let single = server
            .client
            .infer("mlp")
            .input("input", [1, 784], row)
            .send()
            .await
            .unwrap();
        let single = single.output("output").unwrap().as_f32().unwrap();
        for (a, b) in single.iter().zip(&scores[i * 10..(i + 1) * 10]) {
            assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
        }
        // The model ends in a softmax.
        assert!((single.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn intent_classifies_text() {
    let server = start(config(&example_models())).await;
    let texts = [
        "Hi, how are you?",
        "thank you so much",
        "bye, see you later",
    ];
    let r = server
        .client
        .infer("intent")
        .input_bytes("text", [3, 1], &texts)
        .send()
        .await
        .unwrap();
    let labels = r.output("label").unwrap().as_strings().unwrap();
    assert_eq!(labels, ["greeting", "thanks", "goodbye"]);
    let probabilities = r.output("probabilities").unwrap();
    assert_eq!(probabilities.shape(), &[3, 6]);
    for row in probabilities.as_f32().unwrap().chunks(6) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn messages_above_tonics_4_mib_default_are_accepted() {
    let server = start(config(&test_models())).await;
    // 6 MiB of FP32 in, 6 MiB out.
    let data: Vec<f32> = (0..(6 << 20) / 4).map(|i| i as f32).collect();
    let r = server
        .client
        .infer("identity_fp32")
        .input("INPUT0", [16, data.len() as i64 / 16], &data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().as_f32().unwrap(), data);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_response_says_where_its_time_went_and_who_served_it() {
    let mut cfg = config(&test_models());
    cfg.served_by = Some("replica-7".into());
    cfg.max_batch_size = oxserve::BatchSize::Fixed(4);
    // A full batch runs at once; nothing waits on the clock.
    cfg.max_queue_delay = std::time::Duration::from_secs(10);
    let server = start(cfg).await;
    let r = server
        .client
        .infer("identity_fp32")
        .input("INPUT0", [4, 4], &[1.0f32; 16])
        .send()
        .await
        .unwrap();
    let p = r.parameters();
    let int = |key: &str| match p.get(key).and_then(|v| v.parameter_choice.clone()) {
        Some(pb::ParameterChoice::Int64Param(v)) => v,
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(int("batch_size"), 4);
    assert_eq!(int("instance"), 0);
    assert!(int("queue_ns") >= 0);
    assert!(int("compute_ns") > 0, "the model ran");
    assert_eq!(
        p.get("served_by").and_then(|v| v.parameter_choice.clone()),
        Some(pb::ParameterChoice::StringParam("replica-7".into()))
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_larger_than_any_batch_runs_in_chunks_and_comes_back_whole() {
    // No config.pbtxt: the server picks the batch size. 400,000 rows.
    let server = start(config(&test_models())).await;
    let rows = 400_000usize;
    let data: Vec<f32> = (0..rows * 4).map(|i| i as f32).collect();
    let r = server
        .client
        .infer("identity_fp32")
        .input("INPUT0", [rows as i64, 4], &data)
        .send()
        .await
        .unwrap();
    let out = r.output("OUTPUT0").unwrap();
    assert_eq!(out.shape(), &[rows as i64, 4]);
    assert_eq!(out.as_f32().unwrap(), data, "every row back, in order");
    let stats = server
        .client
        .model_statistics(Some("identity_fp32"), Some("1"))
        .await
        .unwrap();
    assert!(
        stats[0].execution_count > 1,
        "run in chunks: {} executions",
        stats[0].execution_count
    );
    assert_eq!(stats[0].inference_count, rows as u64);
    server.stop().await.unwrap();
}
