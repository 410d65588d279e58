#!/usr/bin/env bash
# Interop with API keys: starts oxserve on examples/models with --api-keys
# (the default protected groups: all but health) on free 127.0.0.1 ports,
# checks it with grpcurl (-H 'authorization: Bearer ...') and tritonclient
# (tests/interop/test_api_keys.py), and stops it. Called by run.sh.
#
# Usage: tests/interop/api_keys.sh <path-to-oxserve-binary>
# Env:   GRPCURL  grpcurl binary (default .oxserve/bin/grpcurl)
set -euo pipefail

# shellcheck source=tests/interop/common.sh
. "$(dirname "$0")/common.sh"

addr=127.0.0.1:$(free_port)
http_addr=127.0.0.1:$(free_port)
work=$(mktemp -d "${TMPDIR:-/tmp}/oxserve-keys.XXXXXX")
key=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')
printf '# interop keys\n%s\n' "$key" >"$work/api-keys"
log=$work/server.log
server_pid=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  # The key must never reach the log, whatever happened.
  if grep -qF -- "$key" "$log" 2>/dev/null; then
    echo "FAIL the API key appears in the server log" >&2
    rc=1
  fi
  if [ $rc -ne 0 ]; then
    echo "---- oxserve log ($log) ----"
    cat "$log" || true
    echo "---- end of oxserve log ----"
    echo "api keys: FAILED"
  else
    echo "api keys: all passed"
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Debug logging: the refusals are logged there, and the key must not be.
"$bin" serve --model-repository examples/models --grpc-address "$addr" \
  --http-address "$http_addr" --metrics false --api-keys "$work/api-keys" \
  --log-level debug >"$log" 2>&1 &
server_pid=$!

deadline=$((SECONDS + ${READY_TIMEOUT:-60}))
# Health is not protected, so `oxserve health` (and the kubelet) need no key.
until "$bin" health --addr "$addr" --service inference.GRPCInferenceService >/dev/null 2>&1; do
  kill -0 "$server_pid" 2>/dev/null || { echo "server exited before becoming ready" >&2; server_pid=; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "server not SERVING in time" >&2; exit 1; }
  sleep 0.5
done

failed=0
check() { # name expected-substring command...
  local name=$1 expected=$2
  shift 2
  local out
  out=$("$@" 2>&1) || true
  if grep -qF -- "$expected" <<<"$out"; then
    echo "ok $name"
  else
    echo "FAIL $name: expected '$expected' in:"
    echo "$out"
    failed=1
  fi
}
g() { "$GRPCURL" -plaintext -connect-timeout 10 -max-time 60 "$@"; }

echo "== grpcurl with and without -H 'authorization: Bearer <key>'"
check "list without a key is refused (reflection is metadata)" "Unauthenticated" g "$addr" list
check "list with a wrong key is refused" "PermissionDenied" g -H "authorization: Bearer wrong" "$addr" list
check "list with the key" "inference.GRPCInferenceService" g -H "authorization: Bearer $key" "$addr" list
check "ServerMetadata with the key" '"name"' \
  g -H "authorization: Bearer $key" "$addr" inference.GRPCInferenceService/ServerMetadata
# Health needs no key; grpcurl takes the method from the descriptors it
# reads by reflection, so give it the key for that part only.
check "health Check without a key (reflection with -reflect-header)" "SERVING" \
  g -reflect-header "authorization: Bearer $key" "$addr" grpc.health.v1.Health/Check
check "ServerLive without a key (health)" '"live": true' \
  g -reflect-header "authorization: Bearer $key" "$addr" inference.GRPCInferenceService/ServerLive
check "ModelInfer without a key is refused" "Unauthenticated" \
  g -reflect-header "authorization: Bearer $key" -d '{"model_name":"mlp"}' "$addr" inference.GRPCInferenceService/ModelInfer

echo "== tritonclient (gRPC and HTTP) with headers={'authorization': 'Bearer ...'}"
OXSERVE_KEYS_ADDR=$addr OXSERVE_KEYS_HTTP_ADDR=$http_addr OXSERVE_API_KEY=$key \
  "$PYTHON" -m pytest -q -p no:cacheprovider "$here/test_api_keys.py" || failed=1

kill -0 "$server_pid" 2>/dev/null || { echo "server died during the tests" >&2; failed=1; }
exit $failed
