#!/usr/bin/env bash
# Interop over TLS and mTLS: grpcurl (-cacert, -cert, -key), tritonclient
# (ssl=True with root_certificates, private_key, certificate_chain), curl
# against REST, and `oxserve health --tls-ca ...`, against a real oxserve
# process with --tls-cert, --tls-key and --tls-client-ca, plus its plaintext
# health-only listener (--health-address) as the kubelet would probe it.
#
# The certificates (a CA, a server certificate for localhost and 127.0.0.1,
# a client certificate) are made here with the openssl CLI into a temporary
# directory and deleted afterwards; no key is kept in the repository.
#
# Usage: tests/interop/tls.sh <path-to-oxserve-binary>   (run by tests/interop/run.sh)
# Env:   GRPCURL  grpcurl binary (default .oxserve/bin/grpcurl)
set -euo pipefail

# shellcheck source=tests/interop/common.sh
. "$(dirname "$0")/common.sh"
for tool in openssl curl; do
  command -v $tool >/dev/null || { echo "tls interop: $tool not on PATH" >&2; exit 2; }
done
[ -x "$GRPCURL" ] || { echo "tls interop: grpcurl not found at $GRPCURL" >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/oxserve-tls.XXXXXX")
log=$dir/server.log
server_pid=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ]; then
    echo "---- oxserve log ----"; cat "$log" || true; echo "---- end ----"
    echo "tls interop: FAILED"
  else
    echo "tls interop: all passed"
  fi
  rm -rf "$dir"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- certificates ------------------------------------------------------------
ec() { echo -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes; }
# shellcheck disable=SC2046
openssl req -x509 $(ec) -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 1 \
  -subj /CN=oxserve-interop-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
issue() { # name subject extensions
  # shellcheck disable=SC2046
  openssl req $(ec) -keyout "$dir/$1.key" -out "$dir/$1.csr" -subj "$2" 2>/dev/null
  printf '%b' "$3" >"$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -out "$dir/$1.crt" -days 1 -extfile "$dir/$1.ext" 2>/dev/null
}
issue server /CN=localhost 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n'
issue client /CN=interop-client 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n'

# --- server ------------------------------------------------------------------
grpc_port=$(free_port); http_port=$(free_port); metrics_port=$(free_port); health_port=$(free_port)
"$bin" serve --model-repository examples/models \
  --grpc-address "127.0.0.1:$grpc_port" --http-address "127.0.0.1:$http_port" \
  --metrics-address "127.0.0.1:$metrics_port" --health-address "127.0.0.1:$health_port" \
  --tls-cert "$dir/server.crt" --tls-key "$dir/server.key" --tls-client-ca "$dir/ca.crt" \
  >"$log" 2>&1 &
server_pid=$!
# Readiness through the plaintext health-only listener, as the kubelet asks.
deadline=$((SECONDS + ${READY_TIMEOUT:-60}))
until "$bin" health --addr "127.0.0.1:$health_port" --service inference.GRPCInferenceService >/dev/null 2>&1; do
  kill -0 "$server_pid" 2>/dev/null || { server_pid=; echo "server exited" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "not SERVING in time" >&2; exit 1; }
  sleep 0.5
done

failed=0
check() { # description, command...
  local what=$1; shift
  if out=$("$@" 2>&1); then echo "ok   $what"; else echo "FAIL $what: $out"; failed=1; fi
}
refused() { # description, command... (must fail)
  local what=$1; shift
  if out=$("$@" 2>&1); then echo "FAIL $what (succeeded): $out"; failed=1; else echo "ok   $what"; fi
}
addr=127.0.0.1:$grpc_port
g() { "$GRPCURL" -connect-timeout 10 -max-time 30 "$@"; }
mtls=(-cacert "$dir/ca.crt" -cert "$dir/client.crt" -key "$dir/client.key")

echo "== grpcurl"
check "grpcurl -cacert -cert -key list (reflection over mTLS)" \
  bash -c "$(printf '%q ' "$GRPCURL" "${mtls[@]}" "$addr" list) | grep -qx inference.GRPCInferenceService"
check "grpcurl mTLS ServerLive" \
  bash -c "$(printf '%q ' "$GRPCURL" "${mtls[@]}" "$addr" inference.GRPCInferenceService/ServerLive) | grep -q '\"live\": true'"
refused "grpcurl -cacert without a client certificate is refused" \
  g -cacert "$dir/ca.crt" "$addr" inference.GRPCInferenceService/ServerLive
refused "grpcurl -plaintext on the TLS port is refused" \
  g -plaintext "$addr" inference.GRPCInferenceService/ServerLive
# The health listener serves no reflection (health only): grpcurl gets the
# service from its .proto, written here.
cat >"$dir/health.proto" <<'PROTO'
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
PROTO
check "grpcurl -plaintext health listener: Health/Check" \
  bash -c "$(printf '%q ' "$GRPCURL" -plaintext -import-path "$dir" -proto health.proto -d '{"service":"inference.GRPCInferenceService"}' "127.0.0.1:$health_port" grpc.health.v1.Health/Check) | grep -q SERVING"
unimplemented() { # the call fails with Unimplemented
  local out
  if out=$("$@" 2>&1); then echo "$out"; return 1; fi
  grep -q Unimplemented <<<"$out" || { echo "$out"; return 1; }
}
check "the health listener serves nothing else (Unimplemented)" \
  unimplemented g -plaintext -import-path proto -proto grpc_service.proto "127.0.0.1:$health_port" inference.GRPCInferenceService/ServerLive

echo "== curl (REST over mTLS)"
check "curl --cacert --cert --key /v2/health/ready" \
  curl -sf --cacert "$dir/ca.crt" --cert "$dir/client.crt" --key "$dir/client.key" "https://127.0.0.1:$http_port/v2/health/ready"
refused "curl without a client certificate is refused" \
  curl -sf --cacert "$dir/ca.crt" "https://127.0.0.1:$http_port/v2/health/ready"

echo "== oxserve health over TLS"
check "oxserve health --tls-ca --tls-client-cert --tls-client-key" \
  "$bin" health --addr "$addr" --tls-ca "$dir/ca.crt" --tls-client-cert "$dir/client.crt" --tls-client-key "$dir/client.key"
refused "oxserve health --tls-ca without a client certificate" \
  "$bin" health --addr "$addr" --tls-ca "$dir/ca.crt" --timeout 3s

echo "== tritonclient (ssl=True)"
OXSERVE_TLS_ADDR="localhost:$grpc_port" OXSERVE_TLS_DIR="$dir" \
  "$PYTHON" -m pytest -q -p no:cacheprovider "$here/tls" || failed=1

kill -0 "$server_pid" 2>/dev/null || { echo "server died during the tests" >&2; failed=1; }
exit $failed
