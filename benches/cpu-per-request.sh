#!/usr/bin/env bash
# Server CPU per request, oxserve against the transport floor (issue 14,
# item 7), in one command: builds the release server and the bench
# binaries, starts oxserve (examples/models) and the floor (benches/floor.rs)
# side by side on 127.0.0.1, drives both with the same client and the same
# batch-1 mlp ModelInfer frame at 1 and 32 requests in flight, alternating,
# for several rounds, and prints the table (and writes the JSON) of server
# CPU µs per request, ONNX Runtime's own time per request and the ratios
# oxserve ÷ floor and oxserve ÷ (floor + ONNX Runtime). See
# benches/cpu_per_request.py for how each figure is computed.
#
# Usage: benches/cpu-per-request.sh [OUT_DIR]
#   (default OUT_DIR: target/bench-results/cpu-per-request-<time>)
# Environment (defaults in brackets):
#   CLIENT        h2load (cheap on the client side) or loadgen [h2load]
#   CONCURRENCY   comma-separated requests in flight [1,32]
#   ROUNDS        alternating rounds; medians are reported [3]
#   DURATION      seconds per measured run [10]
#   WARMUP        seconds of unmeasured load before each run [2]
#   SERVER_FLAGS  extra `oxserve serve` flags []
#   H2LOAD        path [h2load on PATH; Debian's nghttp2-client]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-target/bench-results/cpu-per-request-$(date +%Y%m%d-%H%M%S)}
client=${CLIENT:-h2load}
if [ "$client" = h2load ] && ! command -v "${H2LOAD:-h2load}" >/dev/null; then
  echo "h2load not found: apt-get install nghttp2-client, or CLIENT=loadgen" >&2
  exit 1
fi
[ -e .oxserve/onnxruntime/libonnxruntime.so ] || scripts/setup.sh

echo "== building (release)" >&2
cargo build --release --bin oxserve >&2
# shellcheck source=benches/common/lib.sh
. benches/common/lib.sh
executables=$(bench_executables floor loadgen)
floor=$(executable_of floor "$executables")
loadgen=$(executable_of loadgen "$executables")

exec python3 benches/cpu_per_request.py \
  --oxserve target/release/oxserve --floor "$floor" --loadgen "$loadgen" \
  --h2load "${H2LOAD:-$(command -v h2load || echo h2load)}" --client "$client" \
  --concurrency "${CONCURRENCY:-1,32}" --rounds "${ROUNDS:-3}" \
  --duration "${DURATION:-10}" --warmup "${WARMUP:-2}" \
  --server-flags "${SERVER_FLAGS:-}" --out "$out"
