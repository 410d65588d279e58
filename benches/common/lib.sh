# Shell helpers shared by the benchmark scripts (sourced, not run).

# bench_executables NAME...: builds the named bench targets (release) and
# prints "NAME PATH" per line, as cargo reports their executables.
bench_executables() {
  local args=()
  for name in "$@"; do
    args+=(--bench "$name")
  done
  cargo bench "${args[@]}" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])'
}

# executable_of NAME LIST: the path of NAME in bench_executables' output.
executable_of() {
  awk -v name="$1" '$1 == name {print $2}' <<<"$2"
}

# The server under test: start_server REPOSITORY [FLAGS...] starts $server
# on $addr (its log in $out/server.log), sets $pid and waits until it is
# SERVING; stop_server stops it. Callers set server, addr and out, and
# `trap stop_server EXIT`.
pid=
stop_server() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
start_server() {
  local repo=$1
  shift
  "$server" serve --model-repository "$repo" --grpc-address "$addr" \
    --metrics-address 127.0.0.1:0 --http-address 127.0.0.1:0 --log-level warn "$@" >"$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    if "$server" health --addr "$addr" --service inference.GRPCInferenceService >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "server did not become ready; see $out/server.log" >&2
  exit 1
}
