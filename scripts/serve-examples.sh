#!/usr/bin/env bash
# Sets up what oxserve needs (scripts/setup.sh), builds it in release mode and
# serves the bundled example models (mlp, intent) on 0.0.0.0:8001.
# Extra arguments go to `oxserve serve`, e.g. --grpc-address 127.0.0.1:9001.
# Stop with Ctrl-C: the server drains in-flight requests and exits.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
cargo build --release --bin oxserve
exec target/release/oxserve serve --model-repository examples/models --grpc-address 0.0.0.0:8001 "$@"
