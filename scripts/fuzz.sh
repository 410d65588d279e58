#!/usr/bin/env bash
# Fuzzes everything that parses outside input (fuzz/, cargo-fuzz over
# `oxserve::fuzzing`): ModelInferRequest decoding and validation,
# config.pbtxt parsing and completion, the REST inference body. Each
# target runs for FUZZ_SECONDS (default 30) from the committed seeds in
# fuzz/corpus/<target>/ (on a copy, so the seeds stay as committed).
#
# A crash fails the script; libFuzzer leaves the input in
# fuzz/artifacts/<target>/. Fix the bug, then copy the input to
# fuzz/regressions/<target>/: `cargo test -p oxserve --lib fuzzing` runs
# every file there.
#
# Needs cargo-fuzz (installed from crates.io if missing) and a nightly
# toolchain (rustup's, else the stable one with RUSTC_BOOTSTRAP=1).
# Usage: scripts/fuzz.sh [TARGET...]   (default: every target)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
seconds=${FUZZ_SECONDS:-30}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(infer_request model_config rest_body)

if ! cargo fuzz --version > /dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
toolchain=()
if rustup run nightly rustc --version > /dev/null 2>&1; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
# Its own target dir: instrumented builds share nothing with the others.
export CARGO_TARGET_DIR=$root/fuzz/target
# Debug builds (`--dev`) and no sanitizer (`-s none`: the code under test
# is safe Rust; a panic or an abort is what is looked for) keep the
# build within CI's budget.
flags=(--dev -s none)
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
for target in "${targets[@]}"; do
  run=corpus-run/$target
  rm -rf "$run"
  mkdir -p "$run"
  cp corpus/"$target"/* "$run"/
  echo "== fuzz $target (${seconds} s)"
  # -rss_limit_mb: an input that makes the parser allocate without bound
  # is a crash too. -max_len: larger than every seed.
  log=$run.log
  set +e
  cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$target" "$run" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=16384 -timeout=10 \
    -print_final_stats=1 > "$log" 2>&1
  status=$?
  set -e
  # libFuzzer's progress lines stay in the log; its summary and any crash
  # are shown.
  grep -E 'DONE|stat::number_of_executed_units|stat::peak_rss_mb|panicked|SUMMARY|Test unit written|ERROR|Error' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz target $target failed (exit $status); the input is in fuzz/artifacts/$target/"
    exit 1
  fi
done
