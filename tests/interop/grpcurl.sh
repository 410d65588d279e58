#!/usr/bin/env bash
# Checks a running oxserve (serving examples/models) with grpcurl, using only
# server reflection (no .proto files), the way a user would poke at it.
#
# Usage: tests/interop/grpcurl.sh HOST:PORT
# Env:   GRPCURL  grpcurl binary (default .oxserve/bin/grpcurl, from scripts/install-grpcurl.sh)
#        PYTHON   Python with onnxruntime + numpy (default .venv/bin/python)
#
# Prints one line per check ("ok ..." / "FAIL ..." plus the evidence) and
# exits non-zero if any check failed.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 HOST:PORT" >&2
  exit 2
fi
addr=$1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
GRPCURL=${GRPCURL:-$root/.oxserve/bin/grpcurl}
PYTHON=${PYTHON:-$root/.venv/bin/python}
requests=$here/requests

if [ ! -x "$GRPCURL" ]; then
  echo "grpcurl not found at $GRPCURL (set GRPCURL)" >&2
  exit 2
fi

# grpcurl against the server; plaintext, reflection only.
g() { "$GRPCURL" -plaintext -connect-timeout 10 -max-time 60 "$@"; }

# Python snippets below read grpcurl's JSON output on stdin. grpcurl prints
# proto3 JSON with lowerCamelCase names and int64 as strings; accept the
# original field names too so the snippets do not depend on that.
py_prelude='
import base64, json, struct, sys
msg = json.load(sys.stdin)
def field(m, name):
    camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
    return m.get(camel, m.get(name))
def shape(t):
    return [int(d) for d in (field(t, "shape") or [])]
def raw_blobs(m):
    return [base64.b64decode(b) for b in (field(m, "raw_output_contents") or [])]
def output(m, name):
    outs = field(m, "outputs") or []
    names = [o.get("name") for o in outs]
    assert name in names, f"no output {name!r} in {names}"
    i = names.index(name)
    blobs = raw_blobs(m)
    assert len(blobs) == len(outs), f"{len(blobs)} raw_output_contents for {len(outs)} outputs"
    return outs[i], blobs[i]
def bytes_elements(blob):
    out, off = [], 0
    while off < len(blob):
        assert off + 4 <= len(blob), "truncated BYTES length prefix"
        (n,) = struct.unpack_from("<I", blob, off)
        off += 4
        assert off + n <= len(blob), "truncated BYTES element"
        out.append(blob[off:off + n])
        off += n
    return out
'

failures=0
checks=0
# check NAME FUNCTION: run FUNCTION in a subshell with errexit on (a subshell
# outside any `if`, so `set -e` really applies), capture its output, report.
check() {
  local name=$1 fn=$2 out rc
  checks=$((checks + 1))
  set +e
  out=$( (set -euo pipefail; "$fn") 2>&1 )
  rc=$?
  set -e
  if [ $rc -eq 0 ]; then
    echo "ok    $name${out:+ ($out)}"
  else
    failures=$((failures + 1))
    echo "FAIL  $name"
    printf '%s\n' "$out" | sed 's/^/        /'
  fi
}

check_list() {
  local out
  out=$(g "$addr" list)
  local missing=()
  for svc in inference.GRPCInferenceService grpc.health.v1.Health grpc.reflection.v1.ServerReflection; do
    grep -qx "$svc" <<<"$out" || missing+=("$svc")
  done
  if [ ${#missing[@]} -ne 0 ]; then
    echo "missing from list: ${missing[*]}"
    echo "list said:"; echo "$out"
    return 1
  fi
  echo "$(wc -l <<<"$out") services"
}

check_describe_service() {
  local out
  out=$(g "$addr" describe inference.GRPCInferenceService)
  if ! grep -q 'rpc ModelInfer' <<<"$out"; then
    echo "$out"
    return 1
  fi
}

check_describe_message() {
  local out
  out=$(g "$addr" describe inference.ModelInferRequest)
  if ! grep -q 'raw_input_contents' <<<"$out" || ! grep -q 'message ModelInferRequest' <<<"$out"; then
    echo "$out"
    return 1
  fi
}

health_is_serving() {
  local body=$1 out
  out=$(g -d "$body" "$addr" grpc.health.v1.Health/Check)
  "$PYTHON" -c "$py_prelude"'
status = field(msg, "status")
assert status == "SERVING", f"status {status!r}: {msg}"
' <<<"$out"
}
check_health_inference() { health_is_serving '{"service":"inference.GRPCInferenceService"}'; }
check_health_server() { health_is_serving '{}'; }

check_server_live() {
  local out
  out=$(g "$addr" inference.GRPCInferenceService/ServerLive)
  "$PYTHON" -c "$py_prelude"'
assert msg.get("live") is True, msg
' <<<"$out"
}

check_model_metadata() {
  local out
  out=$(g -d '{"name":"mlp"}' "$addr" inference.GRPCInferenceService/ModelMetadata)
  "$PYTHON" -c "$py_prelude"'
assert msg.get("name") == "mlp", msg
platform = msg.get("platform")
assert platform == "onnxruntime_onnx", f"platform {platform!r}"
ins = [(t.get("name"), t.get("datatype"), shape(t)) for t in msg.get("inputs", [])]
outs = [(t.get("name"), t.get("datatype"), shape(t)) for t in msg.get("outputs", [])]
assert ins == [("input", "FP32", [-1, 784])], ins
assert outs == [("output", "FP32", [-1, 10])], outs
print("platform", msg["platform"], "versions", msg.get("versions"))
' <<<"$out"
}

check_infer_mlp() {
  local out
  out=$(g -d @ "$addr" inference.GRPCInferenceService/ModelInfer <"$requests/mlp.json")
  "$PYTHON" -c "$py_prelude"'
import numpy as np, onnxruntime as ort
req = json.load(open(sys.argv[1]))
assert field(msg, "model_name") == "mlp", msg
got_id, want_id = msg.get("id"), req["id"]
assert got_id == want_id, f"id {got_id!r} != {want_id!r}"
t, blob = output(msg, "output")
assert t.get("datatype") == "FP32", t
assert shape(t) == [1, 10], f"shape {shape(t)}"
assert len(blob) == 40, f"{len(blob)} raw bytes, expected 40"
got = np.frombuffer(blob, dtype="<f4").reshape(1, 10)
x = np.array(req["inputs"][0]["contents"]["fp32_contents"], dtype=np.float32).reshape(1, 784)
sess = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
(want,) = sess.run(["output"], {"input": x})
np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
print("shape [1,10], 40 raw bytes, matches onnxruntime")
' "$requests/mlp.json" "$root/examples/models/mlp/1/model.onnx" <<<"$out"
}

check_infer_intent() {
  local out
  out=$(g -d @ "$addr" inference.GRPCInferenceService/ModelInfer <"$requests/intent.json")
  "$PYTHON" -c "$py_prelude"'
t, blob = output(msg, "label")
assert t.get("datatype") == "BYTES", t
assert shape(t) == [1], f"label shape {shape(t)}"
labels = bytes_elements(blob)
assert labels == [b"greeting"], labels
p, pblob = output(msg, "probabilities")
assert p.get("datatype") == "FP32" and shape(p)[0] == 1, p
assert len(pblob) == 4 * shape(p)[1], len(pblob)
print("label", labels[0].decode())
' <<<"$out"
}

# grpcurl exits non-zero and prints "Code: NotFound" on stderr for a NOT_FOUND
# status; anything else (success, another code) fails the check.
expect_not_found() {
  local method=$1 body=$2 out rc
  set +e
  out=$(g -d "$body" "$addr" "$method" 2>&1)
  rc=$?
  set -e
  if [ $rc -eq 0 ]; then
    echo "expected an error, got: $out"
    return 1
  fi
  if ! grep -q 'Code: NotFound' <<<"$out"; then
    echo "expected Code: NotFound, got (exit $rc): $out"
    return 1
  fi
}
check_unknown_model_metadata() {
  expect_not_found inference.GRPCInferenceService/ModelMetadata '{"name":"no_such_model"}'
}
check_unknown_model_infer() {
  expect_not_found inference.GRPCInferenceService/ModelInfer \
    '{"model_name":"no_such_model","inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"contents":{"fp32_contents":[1]}}]}'
}

echo "grpcurl checks against $addr ($("$GRPCURL" -version 2>&1))"
check "list shows inference, health and reflection v1 services" check_list
check "describe inference.GRPCInferenceService mentions ModelInfer" check_describe_service
check "describe inference.ModelInferRequest" check_describe_message
check "Health/Check service=inference.GRPCInferenceService is SERVING" check_health_inference
check "Health/Check service=\"\" is SERVING" check_health_server
check "ServerLive is live" check_server_live
check "ModelMetadata mlp (platform, inputs, outputs)" check_model_metadata
check "ModelInfer mlp with fp32_contents (requests/mlp.json)" check_infer_mlp
check "ModelInfer intent with bytes_contents (requests/intent.json)" check_infer_intent
check "ModelMetadata for an unknown model is NotFound" check_unknown_model_metadata
check "ModelInfer for an unknown model is NotFound" check_unknown_model_infer

if [ $failures -ne 0 ]; then
  echo "grpcurl: $failures of $checks checks failed"
  exit 1
fi
echo "grpcurl: all $checks checks passed"
