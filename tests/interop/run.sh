#!/usr/bin/env bash
# Interop tests: third-party clients (grpcurl, tritonclient over gRPC and
# HTTP, perf_analyzer when installed) against a real oxserve process serving
# examples/models.
#
# Usage: tests/interop/run.sh <path-to-oxserve-binary>
#   e.g. cargo build && tests/interop/run.sh target/debug/oxserve
# Env:   GRPCURL        grpcurl binary (default .oxserve/bin/grpcurl, from scripts/install-grpcurl.sh)
#        READY_TIMEOUT  seconds to wait for the server to become SERVING (default 60)
#
# Starts the server on a free 127.0.0.1 port, waits until its health check for
# inference.GRPCInferenceService says SERVING, runs tests/interop/grpcurl.sh and
# the pytest suite in tests/interop, always stops the server, prints the
# server log if anything failed, and exits non-zero on any failure.
set -euo pipefail

# shellcheck source=tests/interop/common.sh
. "$(dirname "$0")/common.sh"
ready_timeout=${READY_TIMEOUT:-60}

port=$(free_port)
addr=127.0.0.1:$port
log=$(mktemp "${TMPDIR:-/tmp}/oxserve-interop.XXXXXX")
server_pid=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    # Give it a moment to drain and exit; then insist.
    for _ in $(seq 1 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "server did not exit after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ]; then
    echo "---- oxserve log ($log) ----"
    cat "$log" || true
    echo "---- end of oxserve log ----"
    echo "interop: FAILED"
  else
    rm -f "$log"
    echo "interop: all passed"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

metrics_port=$(free_port)
http_port=$(free_port)
http_addr=127.0.0.1:$http_port
echo "starting $bin serve --model-repository examples/models --grpc-address $addr --http-address $http_addr (log: $log)"
# Explicit model control with every model loaded: the same models as the
# default mode, and the repository RPCs (load, unload) can be exercised.
"$bin" serve --model-repository examples/models --grpc-address "$addr" --http-address "$http_addr" \
  --metrics-address "127.0.0.1:$metrics_port" --model-control-mode explicit --load-model '*' >"$log" 2>&1 &
server_pid=$!

deadline=$((SECONDS + ready_timeout))
until "$bin" health --addr "$addr" --service inference.GRPCInferenceService >/dev/null 2>&1; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    set +e
    wait "$server_pid"
    echo "server exited (status $?) before becoming ready" >&2
    set -e
    server_pid=
    exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "server not SERVING after ${ready_timeout}s" >&2
    exit 1
  fi
  sleep 0.5
done
echo "server is SERVING on $addr"

failed=0
echo "== grpcurl"
"$here/grpcurl.sh" "$addr" || failed=1
echo "== pytest (tritonclient over gRPC and HTTP)"
OXSERVE_ADDR=$addr OXSERVE_HTTP_ADDR=$http_addr "$PYTHON" -m pytest -q -p no:cacheprovider "$here" || failed=1
echo "== perf_analyzer (HTTP, gRPC, system shared memory)"
PERF_ANALYZER=${PERF_ANALYZER:-$root/.oxserve/bin/perf_analyzer} \
  "$here/perf_analyzer.sh" "$addr" "$http_addr" || failed=1

echo "== TLS and mTLS (grpcurl, tritonclient ssl=True, curl; a server of its own)"
"$here/tls.sh" "$bin" || failed=1
echo "== API keys (a second server with --api-keys: grpcurl -H, tritonclient headers)"
GRPCURL=$GRPCURL "$here/api_keys.sh" "$bin" || failed=1

# The server must still be up after all that.
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "server died during the tests" >&2
  failed=1
fi
exit $failed
