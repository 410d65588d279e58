"""Helpers shared by the runtime checks: the image and binary under test,
free ports, polling, containers run as production runs them, server
processes, and calls through grpcurl and tritonclient.

Everything listens on 127.0.0.1: containers use the host network (the
Docker engine here has no bridge), so each gets ports picked free at run
time. Nothing waits a fixed time for something to happen: conditions are
polled with a deadline."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "models"
TEST_MODELS = ROOT / "tests" / "models"
VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
IMAGE = os.environ.get("OXSERVE_IMAGE", f"oxserve:{VERSION}")
BINARY = Path(os.environ.get("OXSERVE_BIN", ROOT / "target" / "debug" / "oxserve"))
GRPCURL = Path(os.environ.get("GRPCURL", ROOT / ".oxserve" / "bin" / "grpcurl"))
INFERENCE_SERVICE = "inference.GRPCInferenceService"
# "Hi, how are you?" is the seed use case of the intent model.
GREETING = "Hi, how are you?"

T = TypeVar("T")


def free_port() -> int:
    """A port free a moment ago (containers on the host network and
    processes that are told an address need a concrete one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Polls `condition` until it returns something truthy; fails with `what`
    (and the last value) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def model_repository(*models: Path) -> tempfile.TemporaryDirectory:
    """A temporary model repository with links to `models` (model folders),
    readable by the container's UID 10001."""
    tmp = tempfile.TemporaryDirectory(prefix="oxserve-models-")
    os.chmod(tmp.name, 0o755)
    for model in models:
        subprocess.run(["cp", "-R", str(model), tmp.name], check=True)
    subprocess.run(["chmod", "-R", "a+rX", tmp.name], check=True)
    return tmp


# --- containers -------------------------------------------------------------


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


# How production runs it (docs/deploy.md): read-only root, no capabilities,
# no privilege escalation, the image's own non-root user.
PRODUCTION = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


@dataclass
class Container:
    id: str
    grpc: str  # 127.0.0.1:port
    metrics: str
    http: str

    @classmethod
    def run(
        cls,
        models: str | None,
        *,
        env: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
        mount: str = "/models",
        args: tuple[str, ...] = (),
        image: str = IMAGE,
        ports: tuple[int, int] | None = None,
    ) -> "Container":
        """Starts the image on the host network, as production runs it, with
        `models` mounted read-only at `mount` (none if `models` is None).
        The server's addresses are moved to free loopback ports through its
        own settings (OXSERVE_GRPC_ADDRESS, OXSERVE_METRICS_ADDRESS), as a
        user moving a port would; given `ports` (gRPC, metrics), the caller
        has set them elsewhere (flags, a config file). REST always moves
        (OXSERVE_HTTP_ADDRESS): on the host network, two containers on its
        default port 8000 would collide."""
        grpc_port, metrics_port = ports or (free_port(), free_port())
        grpc, metrics = f"127.0.0.1:{grpc_port}", f"127.0.0.1:{metrics_port}"
        http = f"127.0.0.1:{free_port()}"
        environment = {} if ports else {"OXSERVE_GRPC_ADDRESS": grpc, "OXSERVE_METRICS_ADDRESS": metrics}
        environment["OXSERVE_HTTP_ADDRESS"] = http
        environment.update(env or {})
        command = ["run", "-d", "--network", "host", *PRODUCTION, *options]
        for key, value in environment.items():
            command += ["-e", f"{key}={value}"]
        if models is not None:
            command += ["-v", f"{models}:{mount}:ro"]
        command += [image, *args]
        return cls(docker(*command).stdout.strip(), grpc, metrics, http)

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.id).stdout)[0]

    def health(self) -> dict:
        return self.inspect()["State"].get("Health") or {}

    def wait_health(self, status: str, timeout: float) -> dict:
        """Waits for Docker's health status `status`; returns the health."""
        def reached():
            health = self.health()
            state = self.inspect()["State"]
            if not state["Running"]:
                raise AssertionError(f"container exited ({state['ExitCode']}):\n{self.logs()}")
            return health if health.get("Status") == status else None

        return wait_until(reached, timeout, f"health status {status}", interval=0.5)

    def logs(self) -> str:
        proc = docker("logs", self.id, check=False)
        return proc.stdout + proc.stderr

    def remove(self) -> None:
        docker("rm", "-f", self.id, check=False)


# --- server processes -------------------------------------------------------


class ServerProcess:
    """The oxserve binary (OXSERVE_BIN) on free loopback ports."""

    def __init__(self, repository: Path | str, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        self.grpc = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="oxserve-", suffix=".log")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OXSERVE_")}
        self.proc = subprocess.Popen(
            [
                str(BINARY), "serve",
                "--model-repository", str(repository),
                "--grpc-address", self.grpc,
                "--metrics-address", self.metrics,
                "--http-address", self.http,
                *args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**clean, **(env or {})},
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 60) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            return health(self.grpc).returncode == 0

        wait_until(ready, timeout, f"{self.grpc} to be SERVING", interval=0.2)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def health(address: str, service: str = INFERENCE_SERVICE) -> subprocess.CompletedProcess:
    """`oxserve health`, as a probe runs it."""
    return subprocess.run(
        [str(BINARY), "health", "--addr", address, "--service", service, "--timeout", "2s"],
        capture_output=True, text=True, timeout=30,
    )


# --- clients ----------------------------------------------------------------


def grpcurl(address: str, *after: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """grpcurl -plaintext FLAGS ADDRESS AFTER..."""
    return subprocess.run(
        [str(GRPCURL), "-plaintext", *flags, address, *after],
        capture_output=True, text=True, timeout=60,
    )


def grpcurl_infer(address: str, request: dict, flags: tuple[str, ...] = ()) -> dict:
    proc = grpcurl(address, "inference.GRPCInferenceService/ModelInfer",
                   flags=("-d", json.dumps(request), *flags))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def intent_request(phrases: list[str]) -> dict:
    import base64

    return {
        "model_name": "intent",
        "inputs": [{
            "name": "text", "datatype": "BYTES", "shape": [len(phrases), 1],
            "contents": {"bytes_contents": [base64.b64encode(p.encode()).decode() for p in phrases]},
        }],
    }


def raw_bytes_elements(blob: bytes) -> list[bytes]:
    """A raw BYTES tensor: 4-byte little-endian length, then the bytes."""
    out, i = [], 0
    while i < len(blob):
        n = int.from_bytes(blob[i : i + 4], "little")
        out.append(blob[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def triton(address: str) -> grpcclient.InferenceServerClient:
    # No message size limit on the client: the 100 MB check goes through it.
    return grpcclient.InferenceServerClient(
        url=address,
        channel_args=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )


def local_session(model_dir: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(model_dir / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"])


def infer_intent(client: grpcclient.InferenceServerClient, phrases: list[str]):
    """(labels, probabilities, served_by) from the intent model."""
    x = np.array(phrases, dtype=object).reshape(-1, 1)
    inp = grpcclient.InferInput("text", list(x.shape), "BYTES")
    inp.set_data_from_numpy(x)
    result = client.infer("intent", [inp])
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").reshape(-1)]
    return labels, result.as_numpy("probabilities"), served_by(result)


def infer_mlp(client: grpcclient.InferenceServerClient, x: np.ndarray):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("mlp", [inp])
    return result.as_numpy("output"), served_by(result)


def served_by(result) -> str:
    return result.get_response().parameters["served_by"].string_param


def spin(client: grpcclient.InferenceServerClient, iterations: int):
    """The spin test model: busy for `iterations` 128x128 products (about
    0.1 ms each on one core)."""
    inp = grpcclient.InferInput("ITERATIONS", [1], "INT64")
    inp.set_data_from_numpy(np.array([iterations], dtype=np.int64))
    return client.infer("spin", [inp], client_timeout=120)


def metric(address: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample from a /metrics endpoint (the sum if several match)."""
    import urllib.request

    body = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    total, found = 0.0, False
    for line in body.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in (labels or {}).items()):
            total, found = total + float(m.group(3)), True
    return total if found else None
