#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need
# (ONNX Runtime from the pinned wheel, Python tools, grpcurl), checks format
# and lints, runs the Rust unit, integration and doc tests against real
# in-process servers, checks the Dockerfile and Kubernetes manifests, then
# runs the interop tests with grpcurl, tritonclient (gRPC and HTTP) and
# perf_analyzer against the server binary, and finally runs it for real: the
# images built and run with Docker, Prometheus evaluating the rules, HAProxy
# in front (scripts/check-runtime.sh, which installs Debian's docker.io,
# mmdebstrap, prometheus and haproxy if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/setup.sh --dev
scripts/install-grpcurl.sh
scripts/install-perf-analyzer.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The GPU path cannot run here (no GPU); it must at least compile and lint.
cargo clippy -p oxserve --lib --features cuda -- -D warnings
echo "== cargo test"
cargo test --workspace
# The SDK's optional features (TLS, half, ndarray) have tests of their own.
cargo test -p oxserve-client --all-features
echo "== overload (tests/overload.rs: 60 s open loop at three times capacity)"
cargo test -p oxserve --test overload -- --ignored --nocapture
echo "== fuzzing (scripts/fuzz.sh: each target for 30 s)"
scripts/fuzz.sh
cargo build --bin oxserve
echo "== deployment checks (Dockerfile, k8s, Traefik)"
scripts/check-deploy.sh
echo "== interop (grpcurl, tritonclient, perf_analyzer)"
GRPCURL=$root/.oxserve/bin/grpcurl tests/interop/run.sh target/debug/oxserve
echo "== runtime (Docker images and containers, Prometheus, HAProxy)"
scripts/check-runtime.sh
