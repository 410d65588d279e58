#!/usr/bin/env bash
# One-time (idempotent) set-up of what oxserve needs that is not a Rust crate:
#   .venv/                          Python with requirements.txt (onnxruntime 1.31.1);
#                                   with --dev also requirements-dev.txt (model
#                                   generators, tritonclient, KServe, pytest, checks)
#   .oxserve/onnxruntime/           the ONNX Runtime shared library from the official
#                                   wheel, where the server looks for it by default
# Usage: scripts/setup.sh [--dev]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# pip skips what is already installed at the pinned version, so this is cheap
# on a machine that ran it before.
requirements=requirements.txt
[ "${1:-}" = --dev ] && requirements=requirements-dev.txt
.venv/bin/pip install -q --disable-pip-version-check -r "$requirements"

capi=$(.venv/bin/python -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
lib=$(ls "$capi"/libonnxruntime.so.1.31.* | head -n 1)
mkdir -p .oxserve/onnxruntime
ln -sf "$lib" .oxserve/onnxruntime/libonnxruntime.so
# The CPU wheel ships this next to the runtime; provider libraries are looked
# up beside libonnxruntime.so, so keep them together.
[ -e "$capi/libonnxruntime_providers_shared.so" ] && ln -sf "$capi/libonnxruntime_providers_shared.so" .oxserve/onnxruntime/
echo "ONNX Runtime: $root/.oxserve/onnxruntime/libonnxruntime.so -> $lib"
