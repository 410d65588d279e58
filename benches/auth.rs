//! What the API key check costs a request (server/auth): the constant-time
//! lookup of a presented key among 1, 16 and 256 keys, for the right key
//! and for wrong keys that differ in their first or their last byte (the
//! times should not differ: the comparison must not leak where a guess
//! went wrong), and the classification of a path into its API group.
//!
//! `cargo bench --bench auth` (about a minute).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use oxserve::internals::{Keys, grpc_group, rest_group};

/// `n` keys of 43 characters, like `secrets.token_urlsafe(32)`.
fn keys(n: usize) -> (Keys, Vec<u8>) {
    let all: Vec<String> = (0..n).map(|i| format!("k{i:042}")).collect();
    let last = all.last().expect("n > 0").clone().into_bytes();
    (
        Keys::parse(all.join("\n").as_bytes()).expect("valid keys"),
        last,
    )
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth/lookup");
    for n in [1usize, 16, 256] {
        let (keys, right) = keys(n);
        let mut first = right.clone();
        first[0] ^= 1;
        let mut last = right.clone();
        let end = last.len() - 1;
        last[end] ^= 1;
        for (name, presented) in [
            ("right", &right),
            ("wrong_first_byte", &first),
            ("wrong_last_byte", &last),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), presented, |b, presented| {
                b.iter(|| keys.accepts(black_box(presented)))
            });
        }
    }
    group.finish();
}

fn classify(c: &mut Criterion) {
    c.bench_function("auth/grpc_group", |b| {
        b.iter(|| grpc_group(black_box("/inference.GRPCInferenceService/ModelInfer")))
    });
    c.bench_function("auth/rest_group", |b| {
        b.iter(|| rest_group(black_box("/v2/models/mlp/versions/1/infer")))
    });
}

criterion_group!(benches, lookup, classify);
criterion_main!(benches);
