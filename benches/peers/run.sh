#!/usr/bin/env bash
# The benchmark report in one command: oxserve, Triton (PyTriton), KServe's
# Python server and MLServer serving the same ONNX models (mlp, intent,
# magika, MiniLM) on this machine, loaded by the same load generator
# (loadgen) at several concurrency levels, side by side.
#
#   1. builds the release server and loadgen;
#   2. installs each peer into its own virtual environment under
#      target/peers/<peer>/ from benches/peers/requirements-<peer>.txt
#      (once; again when the file changes) — a peer that cannot be
#      installed is reported, not fatal;
#   3. fetches magika and MiniLM (benches/models/fetch-*.sh);
#   4. runs benches/peers/run.py, which writes target/bench-results/peers-<time>/
#      and, unless NO_README=1, the plots in benches/report/ and the
#      generated section of benches/README.md.
#
# Usage: benches/peers/run.sh [OUT_DIR]
# Environment (defaults in brackets):
#   MODELS        comma-separated [mlp,intent,magika,minilm]
#   PEERS         comma-separated [oxserve,triton,kserve,mlserver]
#   CONCURRENCY   requests in flight [1,4,16,64]
#   ROUNDS        rounds per point, median reported [3]
#   DURATION      seconds per measured run [5]
#   WARMUP        seconds of load before each run [2]
#   OXSERVE_FLAGS extra `oxserve serve` flags []
#   NOTE          the conditions, stated in the README section []
#   PEER_PYTHON   the interpreter for the peers' environments: Python 3.12
#                 with a shared libpython (Triton's backend stub loads it)
#                 [python3.12, or pyenv's 3.12]
#   NO_README=1   results only; leave benches/README.md and benches/report/ alone
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${1:-target/bench-results/peers-$(date +%Y%m%d-%H%M%S)}
venvs=target/peers
mkdir -p "$out" "$venvs"

[ -e .oxserve/onnxruntime/libonnxruntime.so ] || scripts/setup.sh
echo "== building (release)"
cargo build --release --bin oxserve
loadgen=$(cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "loadgen":
        print(m["executable"])')

python=${PEER_PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      python=$candidate
      break
    fi
  done
fi
if [ -z "$python" ]; then
  echo "no Python 3.12 found (set PEER_PYTHON); the peers cannot be installed" >&2
  python=python3
fi

# One environment per peer, rebuilt when its requirements change.
install() { # peer
  local peer=$1 req=benches/peers/requirements-$1.txt dir=$venvs/$1
  local stamp
  stamp=$(sha256sum "$req" | cut -c1-16)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  echo "== installing $peer into $dir ($req)"
  rm -rf "$dir"
  if "$python" -m venv "$dir" >"$venvs/$peer.install.log" 2>&1 &&
    "$dir/bin/pip" install --disable-pip-version-check -r "$req" >>"$venvs/$peer.install.log" 2>&1; then
    echo "$stamp" >"$dir/.requirements"
  else
    echo "   $peer could not be installed; see $venvs/$peer.install.log" >&2
    rm -rf "$dir"
  fi
}
for peer in triton kserve mlserver report; do
  install "$peer"
done
if [ ! -x "$venvs/report/bin/python" ]; then
  echo "the report's environment (matplotlib) could not be installed; see $venvs/report.install.log" >&2
  exit 1
fi

benches/models/fetch-magika.sh
benches/models/fetch-minilm.sh

readme=--readme
[ "${NO_README:-0}" = 1 ] && readme=
exec "$venvs/report/bin/python" benches/peers/run.py \
  --oxserve target/release/oxserve --loadgen "$loadgen" --venvs "$venvs" --out "$out" \
  --models "${MODELS:-mlp,intent,magika,minilm}" --peers "${PEERS:-oxserve,triton,kserve,mlserver}" \
  --concurrency "${CONCURRENCY:-1,4,16,64}" --rounds "${ROUNDS:-3}" \
  --duration "${DURATION:-5}" --warmup "${WARMUP:-2}" \
  --oxserve-flags "${OXSERVE_FLAGS:-}" --note "${NOTE:-}" $readme
