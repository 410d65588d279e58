#!/usr/bin/env bash
# Metrics on versus off: the same release binary, mlp batch-1 requests at
# concurrency 32, alternating on/off three times so drift on a shared
# machine hits both equally. Prints: mode, round, inferences/s, p50 ms,
# p99 ms, server CPU µs per request, server RSS MiB after the run.
# Usage: cargo build --release --bin oxserve --bench loadgen && benches/metrics-onoff.sh
set -u
cd "$(dirname "$0")/.."
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -1)
out=$(mktemp -d)
for round in 1 2 3; do
  for mode in on off; do
    if [ "$mode" = on ]; then offset=0; else offset=1; fi
    port=$((18500 + round * 10 + offset))
    if [ "$mode" = on ]; then flags="--metrics-address 127.0.0.1:$((port + 100))"; else flags="--metrics false"; fi
    # shellcheck disable=SC2086 # flags is two words on purpose
    target/release/oxserve serve --model-repository examples/models \
        --grpc-address "127.0.0.1:$port" --http false $flags --log-level warn >/dev/null 2>&1 &
    pid=$!
    "$loadgen" --addr "127.0.0.1:$port" --server-pid "$pid" --model mlp --concurrency 32 \
        --duration 8s --warmup 2s --runs 1 --json >"$out/$mode-$round.json" 2>/dev/null
    kill "$pid"
    wait "$pid" 2>/dev/null
    python3 - "$out/$mode-$round.json" "$mode" "$round" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); s = d["summary"]; r = d["runs"][0]
print(sys.argv[2], sys.argv[3], round(s["median_inferences_per_sec"]), s["median_latency_ms_p50"],
      s["median_latency_ms_p99"], round(r.get("server_cpu_us_per_request", 0), 1), r.get("server_rss_mib_after"))
PY
  done
done
rm -rf "$out"
