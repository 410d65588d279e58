#!/usr/bin/env bash
# Issue 14, item 2, in one command: batching that needs no tuning, measured
# side by side in one run.
#
#   1. magika (benches/models, fetched by models/fetch-magika.sh): the
#      in-process ONNX Runtime baseline at its best (the best batch size of
#      2 instances x 1 intra-op thread and of 1 instance x 2 threads)
#      against the server with NO settings at all (no flags, no
#      config.pbtxt) at concurrency 64; the server's RSS once loaded and idle,
#      at its peak under load, and after it. Targets: >= 95% of the
#      baseline, peak RSS <= 2x idle.
#   2. mlp (examples/models): the server with no settings (the batch size
#      learned) against the same server with `--max-batch-size 64` (the
#      fixed batch size it had before it learned one) at concurrency 32
#      (throughput) and 1 (p50 latency). Targets: no loss of either.
#
# Each round alternates the contenders, so they see the same machine; the
# medians over ROUNDS are printed and every JSON report is kept.
#
# Usage: benches/zero-config.sh [OUT_DIR]  (default target/bench-results/zero-config-<time>)
# Environment: ROUNDS [3], DURATION per loadgen run [10s], PORT [18001]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-target/bench-results/zero-config-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
addr=127.0.0.1:${PORT:-18001}
[ -e .oxserve/onnxruntime/libonnxruntime.so ] || scripts/setup.sh
benches/models/fetch-magika.sh >&2

# shellcheck source=benches/common/lib.sh
. benches/common/lib.sh

echo "== building (release)" >&2
executables=$(bench_executables loadgen baseline)
loadgen=$(executable_of loadgen "$executables")
baseline=$(executable_of baseline "$executables")
cargo build --release --bin oxserve >&2
server=target/release/oxserve

trap stop_server EXIT
load() { # json file, model, concurrency
  "$loadgen" --addr "$addr" --server-pid "$pid" --model "$2" --batch 1 \
    --concurrency "$3" --duration "$duration" --warmup 3s --runs 1 --json >"$1"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/machine.txt"
for round in $(seq 1 "$rounds"); do
  echo "== round $round" >&2
  "$baseline" --model-repository benches/models --model magika --instances 2 --intra-op-threads 1 \
    --duration 3s --runs 1 --json >"$out/magika-baseline-2x1-$round.json"
  "$baseline" --model-repository benches/models --model magika --instances 1 --intra-op-threads 2 \
    --duration 3s --runs 1 --json >"$out/magika-baseline-1x2-$round.json"
  start_server benches/models
  load "$out/magika-c64-$round.json" magika 64
  stop_server
  for variant in learned fixed64; do
    if [ "$variant" = fixed64 ]; then
      start_server examples/models --max-batch-size 64
    else
      start_server examples/models
    fi
    load "$out/mlp-c32-$variant-$round.json" mlp 32
    load "$out/mlp-c1-$variant-$round.json" mlp 1
    stop_server
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"

python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
from pathlib import Path
out, rounds = Path(sys.argv[1]), int(sys.argv[2])
j = lambda name: json.loads((out / name).read_text())
rows = []
for r in range(1, rounds + 1):
    best = max((j(f"magika-baseline-{v}-{r}.json")["best"] for v in ("2x1", "1x2")),
               key=lambda b: b["inferences_per_sec"])
    m = j(f"magika-c64-{r}.json")
    run = m["runs"][0]
    rows.append({
        "baseline": best["inferences_per_sec"], "baseline_batch": best["batch_size"],
        "server": m["summary"]["median_inferences_per_sec"],
        "idle": m["server_rss_mib_idle"], "peak": run["server_rss_mib_peak"], "after": run["server_rss_mib_after"],
        "mlp_c32": {v: j(f"mlp-c32-{v}-{r}.json")["summary"]["median_inferences_per_sec"] for v in ("learned", "fixed64")},
        "mlp_p50": {v: j(f"mlp-c1-{v}-{r}.json")["summary"]["median_latency_ms_p50"] for v in ("learned", "fixed64")},
    })
print("| round | magika baseline best (batch) | server, no settings, c=64 | ratio | RSS idle / peak / after (MiB) | mlp c=32 learned / fixed 64 | mlp p50 c=1 learned / fixed 64 |")
print("|---|---|---|---|---|---|---|")
for i, x in enumerate(rows, 1):
    print(f"| {i} | {x['baseline']:,.0f} /s ({x['baseline_batch']}) | {x['server']:,.0f} /s | {100 * x['server'] / x['baseline']:.0f}% "
          f"| {x['idle']:.0f} / {x['peak']:.0f} / {x['after']:.0f} | {x['mlp_c32']['learned']:,.0f} / {x['mlp_c32']['fixed64']:,.0f} /s "
          f"| {x['mlp_p50']['learned']:.3f} / {x['mlp_p50']['fixed64']:.3f} ms |")
med = statistics.median
ratio = med(x["server"] / x["baseline"] for x in rows)
growth = med(x["peak"] / x["idle"] for x in rows)
c32 = med(x["mlp_c32"]["learned"] / x["mlp_c32"]["fixed64"] for x in rows)
p50 = med(x["mlp_p50"]["learned"] / x["mlp_p50"]["fixed64"] for x in rows)
print()
print(f"medians: magika {100 * ratio:.0f}% of the baseline (target >= 95%: {'met' if ratio >= 0.95 else 'missed'}); "
      f"peak RSS {growth:.2f}x idle (target <= 2: {'met' if growth <= 2 else 'missed'}); "
      f"mlp c=32 learned/fixed {c32:.2f}; mlp p50 c=1 learned/fixed {p50:.2f}")
(out / "summary.json").write_text(json.dumps({"rounds": rows, "magika_ratio": ratio, "rss_peak_over_idle": growth,
                                              "mlp_c32_learned_over_fixed": c32, "mlp_p50_learned_over_fixed": p50}, indent=1))
EOF
echo "results in $out"
