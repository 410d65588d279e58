#!/usr/bin/env bash
# Sets up what oxserve needs (scripts/setup.sh), builds it in release mode and
# serves the bundled example models (mlp, intent): gRPC on 0.0.0.0:8001, REST
# on 0.0.0.0:8000.
# Extra arguments go to `oxserve serve` and override these defaults, e.g.
#   scripts/serve-examples.sh --grpc-address 127.0.0.1:9001
# Stop with Ctrl-C: the server drains in-flight requests and exits.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
cargo build --release --bin oxserve
# The defaults go in as OXSERVE_* variables, which flags override: a flag
# given twice would be refused. Variables already set by the caller win.
export OXSERVE_MODEL_REPOSITORY="${OXSERVE_MODEL_REPOSITORY:-$root/examples/models}"
export OXSERVE_GRPC_ADDRESS="${OXSERVE_GRPC_ADDRESS:-0.0.0.0:8001}"
exec target/release/oxserve serve "$@"
