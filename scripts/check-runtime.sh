#!/usr/bin/env bash
# Runs oxserve for real, beyond the static checks of scripts/check-deploy.sh:
#   1. the images, built with plain `docker build` (scripts/build-images.sh,
#      with its rebuild check: a source change recompiles only oxserve);
#   2. the CPU image run as production runs it: HEALTHCHECK, grpcurl and
#      tritonclient, `docker stop` under load, containers that cannot serve
#      saying why, the KServe runtime's container (tests/runtime/test_container.py);
#   3. Debian's Prometheus scraping oxserve under load, evaluating every
#      dashboard and alert expression; promtool on the rules and their unit
#      tests (tests/runtime/test_prometheus.py);
#   4. Debian's HAProxy with k8s/haproxy/haproxy.cfg in front of two servers
#      (tests/runtime/test_proxy.py).
# All traffic stays on 127.0.0.1. Installs what is missing from Debian's
# packages (docker.io, mmdebstrap, prometheus, haproxy; needs root), and
# starts dockerd if no engine runs. Prints how long each part took.
#
# Assumes scripts/setup.sh --dev (.venv), scripts/install-grpcurl.sh and
# `cargo build --bin oxserve` (or OXSERVE_BIN). Usage:
#   scripts/check-runtime.sh [extra pytest args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

fail() { echo "check-runtime: $*" >&2; exit 2; }
python=.venv/bin/python
bin=${OXSERVE_BIN:-target/debug/oxserve}
[ -x "$python" ] || fail "$python missing: run scripts/setup.sh --dev"
[ -x "$bin" ] || fail "$bin missing: cargo build --bin oxserve"
[[ "$bin" = /* ]] || bin=$root/$bin

started=$SECONDS
lap=$SECONDS
step() { echo "check-runtime: $1: $((SECONDS - lap)) s"; lap=$SECONDS; }

missing=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "need root to install ${missing[*]} (apt-get)"
  echo "check-runtime: installing Debian's ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  step "installing ${missing[*]}"
fi

scripts/build-images.sh --rebuild-check
step "images"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
export OXSERVE_IMAGE=${OXSERVE_IMAGE:-oxserve:$version}
export OXSERVE_BIN=$bin
export GRPCURL=${GRPCURL:-$root/.oxserve/bin/grpcurl}
for module in test_container test_prometheus test_proxy; do
  # -rP: the measurements the tests print (times, spreads) show in the log.
  "$python" -m pytest "tests/runtime/$module.py" -p no:cacheprovider -v --no-header -rsP "$@"
  step "tests/runtime/$module.py"
done
echo "check-runtime: all parts: $((SECONDS - started)) s"
