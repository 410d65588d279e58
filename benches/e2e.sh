#!/usr/bin/env bash
# The end-to-end measurements of benches/README.md in one go, against the
# release server binary started as its own process (the honest set-up: the
# load generator and the server are separate processes on one machine).
#
#   1. mlp (examples/models), batch-1 requests: resident memory once loaded,
#      loadgen at concurrency 1 and 32, memory after the load, and
#      perf_analyzer's default sweep if it is installed.
#   2. optionally, Triton (nvidia-pytriton) serving the same mlp, with the
#      same loadgen runs and perf_analyzer sweep.
#   3. magika (benches/models, fetched by models/fetch-magika.sh): the
#      in-process ONNX Runtime baseline and the server at concurrency 64,
#      alternated ROUNDS times so that both see the same machine.
#
# Usage: benches/e2e.sh [OUT_DIR]   (default: target/bench-results/<time>)
# Environment (defaults in brackets):
#   RUNS              loadgen runs per point, median reported [3]
#   DURATION          per run [10s]
#   ROUNDS            magika baseline/server rounds [3]
#   PORT              the server's gRPC port [18001]
#   SERVER_FLAGS      extra `oxserve serve` flags for the mlp server []
#   MAGIKA_INSTANCES  instances for magika, server and baseline [2]
#   MAGIKA_THREADS    intra-op threads per instance [1]
#   MAGIKA_MAX_BATCH  the server's max_batch_size for magika: the
#                     baseline's best batch size on this machine [4]
#   PERF_ANALYZER     path [~/.cache/oxserve-tools/bin/perf_analyzer]
#   SKIP_MAGIKA=1     mlp only
#   TRITON_PYTHON     a Python with nvidia-pytriton and onnxruntime installed:
#                     also measure Triton serving mlp (benches/triton/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-target/bench-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
runs=${RUNS:-3}
duration=${DURATION:-10s}
rounds=${ROUNDS:-3}
port=${PORT:-18001}
addr=127.0.0.1:$port
perf_analyzer=${PERF_ANALYZER:-$HOME/.cache/oxserve-tools/bin/perf_analyzer}

# shellcheck source=benches/common/lib.sh
. benches/common/lib.sh

echo "== building (release)"
executables=$(bench_executables loadgen baseline)
loadgen=$(executable_of loadgen "$executables")
baseline=$(executable_of baseline "$executables")
cargo build --release --bin oxserve
server=target/release/oxserve

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none) ($(git status --short 2>/dev/null | wc -l) changed files)"
  echo "nproc: $(nproc)"
  lscpu | grep -E '^(Model name|Thread|Core|Socket|CPU MHz|L3)' || true
  echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt"

rss() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
trap stop_server EXIT

# A repository with mlp alone, so that its memory is mlp's. A copy: the
# server skips model directories that are symbolic links.
mkdir -p "$out/models"
rm -rf "$out/models/mlp"
cp -r examples/models/mlp "$out/models/mlp"
echo "== mlp: server $server ${SERVER_FLAGS:-}"
# shellcheck disable=SC2086 # SERVER_FLAGS is a list of flags.
start_server "$out/models" ${SERVER_FLAGS:-}
echo "rss_loaded_mib $(rss "$pid")" | tee "$out/mlp-rss.txt"
for c in 1 32; do
  "$loadgen" --addr "$addr" --server-pid "$pid" --model mlp --batch 1 \
    --concurrency "$c" --duration "$duration" --warmup 2s --runs "$runs" --json \
    >"$out/mlp-c$c.json"
  python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["summary"]; print(sys.argv[2], {k: round(v, 3) for k, v in s.items()})' \
    "$out/mlp-c$c.json" "concurrency $c:"
done
sleep 2
echo "rss_after_load_mib $(rss "$pid")" | tee -a "$out/mlp-rss.txt"
if [ -x "$perf_analyzer" ]; then
  echo "== perf_analyzer -m mlp -i grpc -u $addr --concurrency-range 1:32:8"
  "$perf_analyzer" -m mlp -i grpc -u "$addr" --concurrency-range 1:32:8 \
    >"$out/mlp-perf_analyzer.txt" 2>&1 || echo "perf_analyzer exited with $?" >>"$out/mlp-perf_analyzer.txt"
  grep -E '^Concurrency:|Failed|error' "$out/mlp-perf_analyzer.txt" || true
  echo "rss_after_perf_analyzer_mib $(rss "$pid")" | tee -a "$out/mlp-rss.txt"
fi
stop_server

if [ -n "${TRITON_PYTHON:-}" ]; then
  # Triton Inference Server from PyPI's nvidia-pytriton, same model, same
  # client tools. Its Python backend stub needs the interpreter's libpython.
  tport=$((port + 100))
  libdir=$("$TRITON_PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
  echo "== triton (pytriton) on 127.0.0.1:$tport"
  LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} setsid "$TRITON_PYTHON" \
    benches/triton/serve_mlp.py --grpc-port "$tport" --http-port $((tport + 1)) \
    --metrics-port $((tport + 2)) >"$out/triton.log" 2>&1 &
  tpgid=$!
  stop_triton() {
    kill -TERM -- "-$tpgid" 2>/dev/null || true
    sleep 5
    kill -KILL -- "-$tpgid" 2>/dev/null || true
  }
  trap 'stop_server; stop_triton' EXIT
  for c in 1 32; do
    # loadgen waits (up to 120 s) for the model to be ready.
    "$loadgen" --addr "127.0.0.1:$tport" --model mlp --batch 1 --concurrency "$c" \
      --duration "$duration" --warmup 2s --runs "$runs" --json >"$out/triton-mlp-c$c.json"
    python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["summary"]; print(sys.argv[2], {k: round(v, 3) for k, v in s.items()})' \
      "$out/triton-mlp-c$c.json" "triton concurrency $c:"
  done
  if [ -x "$perf_analyzer" ]; then
    "$perf_analyzer" -m mlp -i grpc -u "127.0.0.1:$tport" --concurrency-range 1:32:8 \
      >"$out/triton-mlp-perf_analyzer.txt" 2>&1 || echo "perf_analyzer exited with $?" >>"$out/triton-mlp-perf_analyzer.txt"
    grep -E '^Concurrency:|Failed|error' "$out/triton-mlp-perf_analyzer.txt" || true
  fi
  stop_triton
  trap stop_server EXIT
fi

if [ "${SKIP_MAGIKA:-0}" != 1 ]; then
  benches/models/fetch-magika.sh
  instances=${MAGIKA_INSTANCES:-2}
  threads=${MAGIKA_THREADS:-1}
  max_batch=${MAGIKA_MAX_BATCH:-4}
  echo "== magika: $instances instance(s) x $threads intra-op thread(s), max_batch_size $max_batch, $rounds rounds"
  for round in $(seq 1 "$rounds"); do
    "$baseline" --model-repository benches/models --model magika \
      --instances "$instances" --intra-op-threads "$threads" \
      --duration 3s --runs 1 --json >"$out/magika-baseline-$round.json"
    start_server benches/models --instances "$instances" --intra-op-threads "$threads" \
      --max-batch-size "$max_batch"
    "$loadgen" --addr "$addr" --server-pid "$pid" --model magika --batch 1 \
      --concurrency 64 --duration "$duration" --warmup 3s --runs 1 --json \
      >"$out/magika-c64-$round.json"
    stop_server
    python3 -c 'import json, sys
b = json.load(open(sys.argv[1]))["best"]
s = json.load(open(sys.argv[2]))["summary"]
base, srv = b["inferences_per_sec"], s["median_inferences_per_sec"]
print("round %s: baseline best batch %d %.1f inf/s, server c64 %.1f inf/s (%.0f%%)" % (sys.argv[3], b["batch_size"], base, srv, 100 * srv / base))' \
      "$out/magika-baseline-$round.json" "$out/magika-c64-$round.json" "$round"
  done
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
echo "results in $out"
