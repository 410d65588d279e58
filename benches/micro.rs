//! Criterion micro-benchmarks of the request path's pure parts: the batching
//! policy's decision, a request's decode/validation, its response's
//! encoding, and the timing parameters every response carries.
//!
//! `cargo bench --bench micro` runs all of them in under a minute (short
//! warm-up and measurement set below; criterion's own flags such as
//! `--measurement-time 5` or a name filter still override them).

#![allow(
    clippy::unwrap_used,
    clippy::wildcard_enum_match_arm,
    reason = "test code: a failed unwrap is a failed test, and a match picks the cases a test is about"
)]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use oxserve::internals::{
    BatchPolicy, ComputeTimes, DataType, Decision, ExecError, Executed, Executor, ModelSpec, Queue,
    Scheduler, SchedulerSettings, Served, Tensor, TensorSpec, Unobserved, Waiting, decode_request,
    encode_outputs, timing_parameters,
};
use oxserve_proto::inference::model_infer_request::InferInputTensor;
use oxserve_proto::inference::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use prost::Message;
use tokio::time::Instant;

use common::{Rng, random_raw};

/// A queue of `len` single-row requests whose keys cycle through `keys`
/// shapes, oldest first, all enqueued just now.
fn queue(len: usize, keys: u64) -> Vec<Waiting> {
    let now = Instant::now();
    (0..len as u64)
        .map(|i| {
            // FP32, rank 2, one of `keys` non-batch sizes: the shape of a
            // real key for a one-input model.
            Waiting::new(1, vec![11, 2, 784 + i % keys].into_boxed_slice(), now)
        })
        .collect()
}

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy/decide");
    let plain = BatchPolicy {
        max_batch_size: 64,
        preferred_batch_sizes: Vec::new(),
        // Not yet due: an incomplete batch waits, so the whole queue is
        // scanned, the policy's worst case.
        max_queue_delay: Duration::from_millis(1),
    };
    let preferred = BatchPolicy {
        preferred_batch_sizes: vec![8, 16, 32],
        ..plain.clone()
    };
    for len in [1usize, 64, 1024] {
        // Mixed keys: a third of the queue shares the head's key.
        let waiting = queue(len, 3);
        let now = Instant::now();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("max64", len), &waiting, |b, q| {
            b.iter(|| plain.decide(black_box(q.iter().enumerate()), now))
        });
        group.bench_with_input(
            BenchmarkId::new("max64_preferred_8_16_32", len),
            &waiting,
            |b, q| b.iter(|| preferred.decide(black_box(q.iter().enumerate()), now)),
        );
    }
    group.finish();
}

/// An executor that is never given work: a scheduler without workers keeps
/// whatever is queued.
struct Idle;

impl Executor for Idle {
    type Job = u32;
    type Output = ();

    fn execute(&mut self, _: &[&u32], _: usize) -> Result<Executed<()>, ExecError> {
        Err(ExecError::server("never runs"))
    }
}

/// Overload: the cost of turning a request away when the queue is full,
/// and of forming a batch, as the queue grows. Both must stay flat.
fn overload(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    for len in [1_000usize, 100_000] {
        // A scheduler with no workers: its queue stays full.
        let scheduler = Scheduler::<u32, ()>::start::<Idle>(
            "bench",
            Vec::new(),
            SchedulerSettings {
                policy: BatchPolicy::unbatched(),
                capacities: vec![len],
                auto: None,
                inline_below: None,
                adaptive_instances: false,
            },
            Arc::new(Unobserved),
        )
        .expect("no threads to start");
        let tickets: Vec<_> = (0..len as u32)
            .map(|i| {
                scheduler
                    .submit(i, 1, Box::new([0]), 0, None)
                    .expect("below capacity")
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("reject_when_full", len), &len, |b, _| {
            b.iter(|| scheduler.submit(0, 1, Box::new([0]), 0, None).is_err())
        });
        drop(tickets);

        // A batch of 64 decided on and taken from the front of `len`
        // waiting requests.
        let policy = BatchPolicy {
            max_batch_size: 64,
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: Duration::ZERO,
        };
        let mut queue = Queue::default();
        let waiting = || Waiting::new(1, Box::new([0]), Instant::now());
        for i in 0..len as u32 {
            queue.push(0, waiting(), i);
        }
        group.bench_with_input(BenchmarkId::new("form_batch_of_64", len), &len, |b, _| {
            b.iter(|| {
                let Decision::Run(ids) = policy.decide(queue.waiting(), Instant::now()) else {
                    unreachable!("a full batch is always ready");
                };
                let batch = queue.take(&ids);
                // Keep the queue at `len`: the batch goes to the back.
                for queued in batch {
                    queue.push(0, waiting(), queued.job);
                }
            })
        });
    }
    group.finish();
}

fn spec(name: &str, input: TensorSpec, outputs: Vec<TensorSpec>) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        inputs: vec![input],
        outputs,
        max_batch_size: 64,
        max_request_rows: usize::MAX,
        utf8_inputs: Vec::new(),
    }
}

fn tensor_spec(name: &str, datatype: DataType, dims: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        dims: dims.to_vec(),
    }
}

/// `mlp`'s signature: FP32 `input` [-1, 784] → `output` [-1, 10].
fn mlp_spec() -> ModelSpec {
    spec(
        "mlp",
        tensor_spec("input", DataType::Fp32, &[-1, 784]),
        vec![tensor_spec("output", DataType::Fp32, &[-1, 10])],
    )
}

/// `intent`'s signature: BYTES `text` [-1, 1] → `label` [-1] (BYTES) and
/// `probabilities` [-1, 6].
fn intent_spec() -> ModelSpec {
    spec(
        "intent",
        tensor_spec("text", DataType::Bytes, &[-1, 1]),
        vec![
            tensor_spec("label", DataType::Bytes, &[-1]),
            tensor_spec("probabilities", DataType::Fp32, &[-1, 6]),
        ],
    )
}

fn request(model: &str, input: &str, datatype: &str, shape: &[i64]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        id: "bench-1".into(),
        inputs: vec![InferInputTensor {
            name: input.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn decode(c: &mut Criterion) {
    let mut rng = Rng::new(7);
    let mlp = mlp_spec();
    let intent = intent_spec();

    // mlp batch-1, raw: how tritonclient, perf_analyzer and the SDK send.
    let mut mlp_raw = request("mlp", "input", "FP32", &[1, 784]);
    mlp_raw.raw_input_contents = vec![Bytes::from(random_raw("FP32", 784, &mut rng).unwrap())];
    // mlp batch-1, typed `fp32_contents`: how grpcurl and JSON clients send.
    let mut mlp_typed = request("mlp", "input", "FP32", &[1, 784]);
    mlp_typed.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: (0..784).map(|_| rng.next_f64() as f32).collect(),
        ..Default::default()
    });
    // intent, 8 sentences of BYTES, raw.
    let mut intent_raw = request("intent", "text", "BYTES", &[8, 1]);
    intent_raw.raw_input_contents = vec![Bytes::from(random_raw("BYTES", 8, &mut rng).unwrap())];
    // The same as typed `bytes_contents`.
    let mut intent_typed = request("intent", "text", "BYTES", &[8, 1]);
    intent_typed.inputs[0].contents = Some(InferTensorContents {
        bytes_contents: (0..8)
            .map(|i| Bytes::from(format!("please book a table for {i} tonight")))
            .collect(),
        ..Default::default()
    });

    let mut group = c.benchmark_group("tensor/decode_request");
    let cases = [
        ("mlp_b1_raw", &mlp, &mlp_raw),
        ("mlp_b1_fp32_contents", &mlp, &mlp_typed),
        ("intent_b8_bytes_raw", &intent, &intent_raw),
        ("intent_b8_bytes_contents", &intent, &intent_typed),
    ];
    for (name, spec, req) in cases {
        // Fail loudly if the fixture is wrong rather than time an error path.
        decode_request(spec, req, &[]).expect("benchmark requests are valid");
        group.bench_function(name, |b| {
            b.iter(|| decode_request(black_box(spec), black_box(req), &[]))
        });
    }
    group.finish();

    // From the bytes on the wire: prost decode (raw contents stay slices of
    // the received buffer) plus validation.
    let mut group = c.benchmark_group("tensor/wire_to_tensors");
    for (name, spec, req) in [
        ("mlp_b1_raw", &mlp, &mlp_raw),
        ("intent_b8_bytes_raw", &intent, &intent_raw),
    ] {
        let wire = Bytes::from(req.encode_to_vec());
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let req =
                    ModelInferRequest::decode(black_box(wire.clone())).expect("encoded just above");
                decode_request(spec, &req, &[]).map(|d| d.inputs.len())
            })
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut rng = Rng::new(11);
    let mlp_out = vec![Tensor {
        name: "output".into(),
        datatype: DataType::Fp32,
        shape: vec![1, 10],
        data: Bytes::from(random_raw("FP32", 10, &mut rng).unwrap()),
    }];
    let intent_out = vec![
        Tensor {
            name: "label".into(),
            datatype: DataType::Bytes,
            shape: vec![8],
            data: Bytes::from(random_raw("BYTES", 8, &mut rng).unwrap()),
        },
        Tensor {
            name: "probabilities".into(),
            datatype: DataType::Fp32,
            shape: vec![8, 6],
            data: Bytes::from(random_raw("FP32", 48, &mut rng).unwrap()),
        },
    ];

    let mut group = c.benchmark_group("tensor/encode_outputs");
    for (name, outputs) in [("mlp_b1", &mlp_out), ("intent_b8", &intent_out)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || outputs.clone(),
                // Dropping the result is part of the cost, as in the
                // server, which drops it once the response is written.
                |t| {
                    let (meta, raw) = encode_outputs(black_box(t));
                    (meta.len(), raw.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // Outputs to the bytes on the wire: encode_outputs plus prost encoding
    // of the whole response.
    let mut group = c.benchmark_group("tensor/tensors_to_wire");
    for (name, outputs) in [("mlp_b1", &mlp_out), ("intent_b8", &intent_out)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || outputs.clone(),
                |t| {
                    let (outputs, raw_output_contents) = encode_outputs(t);
                    let response = ModelInferResponse {
                        model_name: "mlp".into(),
                        model_version: "1".into(),
                        id: "bench-1".into(),
                        parameters: Default::default(),
                        outputs,
                        raw_output_contents,
                    };
                    response.encode_to_vec().len()
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The per-request timing parameters every response carries (queue_ns,
/// compute_ns, batch_size, instance, served_by): what they cost to build.
fn timing(c: &mut Criterion) {
    let served = Served {
        output: (),
        queued: Duration::from_micros(87),
        times: ComputeTimes {
            input: Duration::from_micros(5),
            infer: Duration::from_micros(40),
            output: Duration::from_micros(3),
        },
        batch_rows: 1,
        instance: 0,
    };
    c.bench_function("timing_parameters", |b| {
        b.iter(|| timing_parameters(black_box(&served), black_box("oxserve-7d9f8c6b5-x2x4q")))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = policy, overload, decode, encode, timing
}
criterion_main!(benches);
