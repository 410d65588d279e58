#!/usr/bin/env bash
# Interop: Triton's perf_analyzer against a running oxserve, over HTTP and
# gRPC, with tensors in the request and in system shared memory. Each run is
# short (a few windows of 50 requests) and checks that perf_analyzer finished
# without error, not how fast it was.
#
# Usage: tests/interop/perf_analyzer.sh <grpc HOST:PORT> <http HOST:PORT>
# Env:   PERF_ANALYZER  the perf_analyzer command (default .oxserve/bin/perf_analyzer,
#                       from scripts/install-perf-analyzer.sh); if it is not
#                       there, the runs are skipped and said to be.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
grpc=$1
http=$2
pa=${PERF_ANALYZER:-$root/.oxserve/bin/perf_analyzer}
if [ ! -x "$pa" ]; then
  echo "perf_analyzer: SKIPPED ($pa not installed; run scripts/install-perf-analyzer.sh)"
  exit 0
fi
failed=0
for protocol in http grpc; do
  url=$http
  [ "$protocol" = grpc ] && url=$grpc
  for memory in none system; do
    log=$(mktemp "${TMPDIR:-/tmp}/oxserve-pa.XXXXXX")
    # -s 1000: any latency counts as stable; 2 cores shared with the server
    # never give perf_analyzer its default 10% stability.
    if "$pa" -m mlp -u "$url" -i "$protocol" --shared-memory="$memory" \
        --concurrency-range 2 --measurement-mode count_windows \
        --measurement-request-count 50 -s 1000 --max-trials 3 >"$log" 2>&1 \
        && grep -q "Successful request count" "$log"; then
      echo "perf_analyzer -i $protocol --shared-memory=$memory: ok ($(grep -m1 'Throughput:' "$log" | xargs))"
      rm -f "$log"
    else
      echo "perf_analyzer -i $protocol --shared-memory=$memory: FAILED"
      cat "$log"
      rm -f "$log"
      failed=1
    fi
  done
done
# --trace-* goes through TraceSetting (the server keeps no trace file; the
# level and rate are its OpenTelemetry sampling).
log=$(mktemp "${TMPDIR:-/tmp}/oxserve-pa.XXXXXX")
if "$pa" -m mlp -u "$grpc" -i grpc --trace-level TIMESTAMPS --trace-rate 1000 \
    --concurrency-range 1 --measurement-mode count_windows \
    --measurement-request-count 50 -s 1000 --max-trials 3 >"$log" 2>&1 \
    && grep -q "Successful request count" "$log"; then
  echo "perf_analyzer -i grpc --trace-level TIMESTAMPS --trace-rate 1000: ok"
else
  echo "perf_analyzer -i grpc --trace-level TIMESTAMPS --trace-rate 1000: FAILED"
  cat "$log"
  failed=1
fi
rm -f "$log"
exit $failed
