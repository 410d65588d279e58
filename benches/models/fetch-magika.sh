#!/usr/bin/env bash
# Puts magika's content-type model (Google, Apache-2.0) into
# benches/models/magika/1/model.onnx: the compute-bound "real model" of the
# benchmarks. It comes from the magika wheel on PyPI (pinned), which bundles
# the ONNX file (about 3 MB): INT32 `bytes` [-1, 2048] -> FP32
# `target_label` [-1, 214]. Nothing is committed; run this once.
# Usage: benches/models/fetch-magika.sh [PYTHON]  (default: .venv/bin/python)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${1:-$root/.venv/bin/python}
version=1.0.3
dest=$root/benches/models/magika/1
if [ -s "$dest/model.onnx" ]; then
  echo "already there: $dest/model.onnx"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download -q --disable-pip-version-check --no-deps \
  --only-binary=:all: --platform manylinux_2_28_x86_64 "magika==$version" -d "$tmp"
wheel=$(ls "$tmp"/magika-"$version"-*.whl)
"$python" - "$wheel" "$dest" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    name = "magika/models/standard_v3_3/model.onnx"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").write_bytes(z.read(name))
PY
echo "wrote $dest/model.onnx ($(stat -c %s "$dest/model.onnx") bytes)"
