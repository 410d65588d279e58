"""Server CPU per request: oxserve against the transport floor (floor.rs).

Started by benches/cpu-per-request.sh, which builds the binaries. Both
servers run side by side as their own processes on 127.0.0.1; one client
(h2load with a prepared gRPC frame, or loadgen) sends them the same batch-1
`mlp` ModelInfer request at each concurrency, in alternating order, for
several rounds. For each run:

  server CPU µs/request = Δ(utime + stime) of the server process (from
      /proc/<pid>/stat) / Δ(successful requests the server counted, from
      its ModelStatistics)
  ONNX Runtime µs/request (oxserve only) = Δ(Σ batch_stats compute_infer
      ns) / Δ(successful requests): the model's own time, amortised over
      the requests of each batch
  target ratio = oxserve CPU / (floor CPU + ONNX Runtime time); issue 14
      asks for ≤ 1.2 at 32 in flight and ≤ 1.5 at 1.

The server's own count is the denominator because h2load only sees HTTP
statuses (a gRPC error is HTTP 200 with a grpc-status trailer); a run whose
client and server counts disagree by more than the requests in flight is
flagged. Ratios are computed per round (both servers measured minutes
apart at most) and the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "peers"))
import procs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGETS = {"1": 1.5, "32": 1.2}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def stats(floor: str, addr: str) -> dict:
    """The server's mlp statistics (floor.rs's `stats` prints them as JSON)."""
    out = run([floor, "stats", "--addr", addr, "--model", "mlp"])
    if out.returncode != 0:
        raise RuntimeError(f"statistics of {addr}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def wait_ready(oxserve: str, server: procs.Server, addr: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
        probe = run(
            [oxserve, "health", "--addr", addr, "--service", "inference.GRPCInferenceService"]
        )
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} was not ready within {timeout:.0f} s:\n{server.log_tail()}")


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the clients)."""
    usage = os.times()
    return usage.children_user + usage.children_system


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_h2load(out: str) -> dict:
    requests = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    latency = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    if not requests or not finished:
        raise RuntimeError(f"cannot read h2load's output:\n{out[-2000:]}")
    result = {
        "client_ok": int(requests.group(4)),
        "client_failed": int(requests.group(5)) + int(requests.group(6)),
        "client_rps": float(finished.group(3)),
    }
    if latency:
        result["latency_ms_mean"] = float(latency.group(5)) * _UNITS[latency.group(6)]
    return result


class Client:
    """The one client both servers get: h2load (default) or loadgen."""

    def __init__(self, args, frame: pathlib.Path):
        self.kind = args.client
        self.args = args
        self.frame = frame

    def command(self, addr: str, concurrency: int, seconds: float) -> list[str]:
        if self.kind == "h2load":
            # One connection, `concurrency` streams on it, one client thread.
            return [
                self.args.h2load, "-c", "1", "-t", "1", "-m", str(concurrency),
                "-D", f"{round(seconds * 1000)}ms", "-d", str(self.frame),
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                f"http://{addr}/inference.GRPCInferenceService/ModelInfer",
            ]  # fmt: skip
        return [
            self.args.loadgen, "--addr", addr, "--model", "mlp", "--concurrency", str(concurrency),
            "--duration", f"{seconds:g}s", "--warmup", "0s", "--runs", "1", "--json",
        ]  # fmt: skip

    def parse(self, out: str) -> dict:
        if self.kind == "h2load":
            return parse_h2load(out)
        report = json.loads(out[out.index("{") :])
        r = report["runs"][0]
        failed = r["requests_failed"]
        return {
            "client_ok": r["requests_ok"],
            "client_failed": failed,
            "client_rps": r["requests_per_sec"],
            "latency_ms_mean": r["latency_ms_mean"],
            "latency_ms_p50": r["latency_ms_p50"],
            "latency_ms_p99": r["latency_ms_p99"],
        }


def measure(client: Client, floor: str, name: str, server: procs.Server, addr: str, c: int, seconds: float, warmup: float) -> dict:
    if warmup > 0:
        run(client.command(addr, c, warmup), check=True)
    s0, cpu0, client0 = stats(floor, addr), procs.cpu_seconds([server.pid]), children_cpu()
    started = time.monotonic()
    out = run(client.command(addr, c, seconds))
    elapsed = time.monotonic() - started
    cpu1, client1, s1 = procs.cpu_seconds([server.pid]), children_cpu(), stats(floor, addr)
    if out.returncode != 0:
        raise RuntimeError(f"the client failed against {name}:\n{(out.stdout + out.stderr)[-2000:]}")
    result = client.parse(out.stdout + out.stderr)
    served = s1["success"] - s0["success"]
    result.update(
        server=name,
        concurrency=c,
        server_ok=served,
        server_cpu_s=cpu1 - cpu0,
        server_cpu_us_per_request=(cpu1 - cpu0) * 1e6 / max(served, 1),
        client_cpu_us_per_request=(client1 - client0) * 1e6 / max(served, 1),
        wall_s=elapsed,
        # Counts may differ by the requests cut off when the client stops.
        counts_agree=abs(served - result["client_ok"]) <= c and result["client_failed"] == 0,
    )
    if s1["compute_infer_ns"] or s0["compute_infer_ns"]:
        result["ort_us_per_request"] = (s1["compute_infer_ns"] - s0["compute_infer_ns"]) / 1e3 / max(served, 1)
        result["executions"] = s1["executions"] - s0["executions"]
    return result


def summarise(runs: list[dict], levels: list[int]) -> list[dict]:
    rows = []
    for c in levels:
        ox = [r for r in runs if r["server"] == "oxserve" and r["concurrency"] == c]
        fl = [r for r in runs if r["server"] == "floor" and r["concurrency"] == c]
        pairs = list(zip(ox, fl))  # same round
        med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        row = {
            "concurrency": c,
            "rounds": len(pairs),
            "oxserve_cpu_us": med([o["server_cpu_us_per_request"] for o in ox]),
            "floor_cpu_us": med([f["server_cpu_us_per_request"] for f in fl]),
            "ort_us": med([o.get("ort_us_per_request", 0.0) for o in ox]),
            "oxserve_rps": med([o["server_ok"] / o["wall_s"] for o in ox]),
            "floor_rps": med([f["server_ok"] / f["wall_s"] for f in fl]),
            "oxserve_latency_ms_mean": med([o.get("latency_ms_mean", float("nan")) for o in ox]),
            "floor_latency_ms_mean": med([f.get("latency_ms_mean", float("nan")) for f in fl]),
            "ratio_to_floor": med([o["server_cpu_us_per_request"] / f["server_cpu_us_per_request"] for o, f in pairs]),
            "ratio_to_target_base": med([
                o["server_cpu_us_per_request"] / (f["server_cpu_us_per_request"] + o.get("ort_us_per_request", 0.0))
                for o, f in pairs
            ]),
            "counts_agree": all(r["counts_agree"] for r in ox + fl),
        }
        target = TARGETS.get(str(c))
        row["target"] = target
        row["met"] = None if target is None else row["ratio_to_target_base"] <= target
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| in flight | oxserve CPU µs/req | floor CPU µs/req | ORT µs/req | oxserve ÷ floor | oxserve ÷ (floor + ORT) | target | req/s oxserve / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = "—" if r["target"] is None else f"≤ {r['target']}: {'met' if r['met'] else 'missed'}"
        lines.append(
            f"| {r['concurrency']} | {r['oxserve_cpu_us']:.1f} | {r['floor_cpu_us']:.1f} | {r['ort_us']:.1f} "
            f"| {r['ratio_to_floor']:.2f}× | {r['ratio_to_target_base']:.2f}× | {target} "
            f"| {r['oxserve_rps']:,.0f} / {r['floor_rps']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oxserve", required=True)
    parser.add_argument("--floor", required=True)
    parser.add_argument("--loadgen")
    parser.add_argument("--h2load", default=shutil.which("h2load") or "h2load")
    parser.add_argument("--client", choices=["h2load", "loadgen"], default="h2load")
    parser.add_argument("--repository", default=str(ROOT / "examples/models"))
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each run")
    parser.add_argument("--server-flags", default="", help="extra `oxserve serve` flags")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.client == "loadgen" and not args.loadgen:
        parser.error("--client loadgen needs --loadgen")
    levels = [int(c) for c in args.concurrency.split(",")]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = procs.machine()
    info["client"] = args.client
    if args.client == "h2load":
        info["h2load"] = run([args.h2load, "--version"]).stdout.strip()

    frame = out / "mlp-b1.grpc"
    run([args.floor, "frame", "--out", str(frame)], check=True)
    client = Client(args, frame)

    ox_addr = f"127.0.0.1:{procs.free_port()}"
    floor_addr = f"127.0.0.1:{procs.free_port()}"
    servers = {}
    try:
        servers["oxserve"] = procs.Server(
            "oxserve",
            [args.oxserve, "serve", "--model-repository", args.repository, "--grpc-address", ox_addr,
             "--metrics-address", "127.0.0.1:0", "--log-level", "warn", *args.server_flags.split()],
            out / "oxserve.log",
        )  # fmt: skip
        servers["floor"] = procs.Server(
            "floor", [args.floor, "serve", "--addr", floor_addr], out / "floor.log"
        )
        addrs = {"oxserve": ox_addr, "floor": floor_addr}
        for name, server in servers.items():
            wait_ready(args.oxserve, server, addrs[name])
            # One request end to end: the frame is valid for this server.
            before = stats(args.floor, addrs[name])["success"]
            run(client.command(addrs[name], 1, 1.0), check=True)
            if stats(args.floor, addrs[name])["success"] <= before:
                raise RuntimeError(f"{name} answered the frame with an error")
        print(f"oxserve on {ox_addr} (pid {servers['oxserve'].pid}), floor on {floor_addr} "
              f"(pid {servers['floor'].pid}); client {args.client}; {args.rounds} rounds of "
              f"{args.duration:g} s at concurrency {levels}", flush=True)  # fmt: skip
        runs = []
        for rnd in range(1, args.rounds + 1):
            for c in levels:
                order = ["oxserve", "floor"] if rnd % 2 else ["floor", "oxserve"]
                for name in order:
                    r = measure(client, args.floor, name, servers[name], addrs[name], c, args.duration, args.warmup)
                    r["round"] = rnd
                    runs.append(r)
                    ort = f" ORT {r['ort_us_per_request']:.1f} µs/req" if "ort_us_per_request" in r else ""
                    print(f"round {rnd} c={c:<3} {name:8} {r['server_ok'] / r['wall_s']:9,.0f} req/s  "
                          f"server CPU {r['server_cpu_us_per_request']:6.1f} µs/req  client CPU "
                          f"{r['client_cpu_us_per_request']:5.1f} µs/req{ort}"
                          f"{'' if r['counts_agree'] else '  (client and server counts disagree!)'}", flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    info["loadavg_after"] = pathlib.Path("/proc/loadavg").read_text().split()[:3]
    rows = summarise(runs, levels)
    result = {"machine": info, "args": vars(args), "summary": rows, "runs": runs}
    (out / "cpu-per-request.json").write_text(json.dumps(result, indent=2))
    print()
    print(table(rows))
    print(f"\n{info['date']}, commit {info.get('commit')}, load average before {' '.join(info['loadavg_before'])}, "
          f"after {' '.join(info['loadavg_after'])}; medians of {args.rounds} rounds")  # fmt: skip
    print(f"results: {out / 'cpu-per-request.json'}")
    return 0 if all(r["counts_agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
