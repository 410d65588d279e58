#!/usr/bin/env bash
# Soak: the server binary as its own process under mixed load for a long
# time (30 minutes by default), its resident memory sampled throughout.
# Memory should be flat once warm: every sample after the first minutes
# within a few MiB of the others. Not run in CI (scripts/test.sh runs the
# 60 s overload test, tests/overload.rs, instead).
#
# The load, in rounds of ROUND seconds until DURATION is up:
#   - mlp (examples/models), closed loop at concurrency 16;
#   - intent, closed loop at concurrency 8 (BYTES tensors, string outputs);
#   - mlp, open loop at OVERLOAD_RATE req/s with a small queue
#     (--max-queue-size 16), so refusals and queue churn are part of it;
#   - 200 malformed requests (tests/faults.rs's kind, via grpcurl if
#     installed), so client faults are part of it too.
#
# Usage: benches/soak/soak.sh [OUT_DIR]   (default: target/soak/<time>)
# Environment (defaults in brackets):
#   DURATION       total seconds [1800]
#   ROUND          seconds per load kind [60]
#   SAMPLE         seconds between RSS samples [5]
#   OVERLOAD_RATE  open-loop requests per second [3000]
#   PORT           the server's gRPC port [18101]
#   PROFILE        cargo profile for the server and load generator [release]
#   GRPCURL        grpcurl binary [.oxserve/bin/grpcurl]
# Output: OUT_DIR/rss.csv (seconds since start, RSS MiB), the load
# generator's reports, and a summary on stdout: RSS at the end of minute
# 1, at the end, the maximum, and the slope of a least-squares line over
# the samples after the first minute (MiB per hour).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${1:-target/soak/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
duration=${DURATION:-1800}
round=${ROUND:-60}
sample=${SAMPLE:-5}
rate=${OVERLOAD_RATE:-3000}
port=${PORT:-18101}
profile=${PROFILE:-release}
grpcurl=${GRPCURL:-$root/.oxserve/bin/grpcurl}
addr=127.0.0.1:$port

cargo build --profile "$profile" --bin oxserve
dir=$profile
[ "$profile" = dev ] && dir=debug
target=${CARGO_TARGET_DIR:-$root/target}
# The load generator is a bench target: build it now, run it below.
cargo bench --profile "$profile" --bench loadgen --no-run 2>&1 | tail -n 1
loadgen=$(ls -t "$target/$dir"/deps/loadgen-* | grep -v '\.d$' | head -n 1)

"$target/$dir/oxserve" serve --model-repository examples/models \
  --grpc-address "$addr" --http-address 127.0.0.1:0 --metrics-address 127.0.0.1:0 \
  --max-queue-size 16 --log-level warn > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; kill $sampler 2>/dev/null || true' EXIT

start=$(date +%s)
echo "seconds,rss_mib" > "$out/rss.csv"
(
  while kill -0 $server 2>/dev/null; do
    kib=$(awk '/^VmRSS:/ {print $2}' /proc/$server/status 2>/dev/null || echo 0)
    echo "$(( $(date +%s) - start )),$(awk "BEGIN {printf \"%.1f\", $kib / 1024}")" >> "$out/rss.csv"
    sleep "$sample"
  done
) &
sampler=$!

load() { # name, then loadgen flags
  local name=$1
  shift
  "$loadgen" --addr "$addr" --server-pid "$server" --warmup 0s --duration "${round}s" "$@" \
    >> "$out/loadgen-$name.txt" 2>&1 || echo "loadgen $name failed (see $out/loadgen-$name.txt)"
}

faults() {
  [ -x "$grpcurl" ] || return 0
  for i in $(seq 1 200); do
    # Undecodable for the server's schema, and non-UTF-8 text for intent.
    "$grpcurl" -plaintext -d '{"model_name":"intent","inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"contents":{"bytes_contents":["/w=="]}}]}' \
      "$addr" inference.GRPCInferenceService/ModelInfer > /dev/null 2>&1 || true
  done
}

"$loadgen" --addr "$addr" --model mlp --requests 1 --wait 120s > /dev/null 2>&1 || true
while [ $(( $(date +%s) - start )) -lt "$duration" ]; do
  load mlp --model mlp --concurrency 16
  load intent --model intent --concurrency 8
  load overload --model mlp --concurrency 256 --rate "$rate"
  faults
done
kill $server
wait $server 2>/dev/null || true
kill $sampler 2>/dev/null || true

awk -F, 'NR > 1 { t[NR] = $1; r[NR] = $2; n = NR }
END {
  first = 0; max = 0; sx = sy = sxx = sxy = 0; m = 0
  for (i = 2; i <= n; i++) {
    if (r[i] > max) max = r[i]
    if (t[i] <= 60) first = r[i]
    if (t[i] > 60 && r[i] > 0) { m++; sx += t[i]; sy += r[i]; sxx += t[i]*t[i]; sxy += t[i]*r[i] }
  }
  slope = (m > 1 && (m*sxx - sx*sx) != 0) ? (m*sxy - sx*sy) / (m*sxx - sx*sx) * 3600 : 0
  last = r[n]; if (last == 0) last = r[n-1]
  printf "soak: %d s, RSS after 1 min %.1f MiB, at the end %.1f MiB, max %.1f MiB, trend after 1 min %+.1f MiB/hour (%d samples)\n", t[n], first, last, max, slope, m
}' "$out/rss.csv" | tee "$out/summary.txt"
echo "samples: $out/rss.csv"
