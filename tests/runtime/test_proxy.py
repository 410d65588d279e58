"""An h2c proxy in front: Debian's HAProxy, configured by
k8s/haproxy/haproxy.cfg (the Traefik IngressRoute's equivalent), in front of
two oxserve processes. Unary and streaming calls, error codes and trailers,
a 100 MB message; requests spread over both servers (their `served_by`);
one server SIGTERMed under load and no client request fails.

Only the addresses in the shipped file change: the bind address, and the
DNS-discovered pods (server-template) become the two local servers."""

from __future__ import annotations

import base64
import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from runtime import (
    EXAMPLES,
    GREETING,
    GRPCURL,
    ROOT,
    TEST_MODELS,
    ServerProcess,
    free_port,
    grpcurl,
    grpcurl_infer,
    infer_intent,
    infer_mlp,
    intent_request,
    metric,
    model_repository,
    raw_bytes_elements,
    served_by,
    triton,
    spin,
    wait_until,
)

CONFIG = ROOT / "k8s" / "haproxy" / "haproxy.cfg"
HOST = "infer.example.com"  # the IngressRoute's Host rule
BACKENDS = ("oxserve-a", "oxserve-b")


def local_config(listen: str, servers: list[str]) -> str:
    """The shipped configuration with its two addresses moved: the
    frontend's bind, and the server-template's DNS name replaced by static
    servers (no DNS here), each keeping the template's parameters."""
    text = CONFIG.read_text()
    text, binds = re.subn(r"(?m)^(\s+bind )\S+", rf"\g<1>{listen}", text)
    assert binds == 1
    template = re.search(r"(?m)^(\s+)server-template (\S+) \S+ \S+(.*)$", text)
    assert template, "no server-template in the shipped config"
    indent, prefix, params = template.groups()
    params = re.sub(r"\s(resolvers|init-addr) \S+", "", params)
    lines = [f"{indent}server {prefix}-{i + 1} {address}{params}" for i, address in enumerate(servers)]
    text = text[: template.start()] + "\n".join(lines) + text[template.end() :]
    # The resolvers section is unused without the template.
    return re.sub(r"(?ms)^resolvers .*", "", text)


class HAProxy:
    def __init__(self, servers: list[str]):
        binary = shutil.which("haproxy")
        if binary is None:
            pytest.fail("haproxy not installed (scripts/check-runtime.sh installs Debian's)")
        self.address = f"127.0.0.1:{free_port()}"
        self.dir = tempfile.TemporaryDirectory(prefix="oxserve-haproxy-")
        config = Path(self.dir.name, "haproxy.cfg")
        config.write_text(local_config(self.address, servers))
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = open(Path(self.dir.name, "haproxy.log"), "w+")
        self.proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        self.dir.cleanup()


class Through:
    """A tritonclient that reaches the servers through the proxy, with the
    Host the route matches (gRPC's :authority)."""

    def __init__(self, address: str, authority: str = HOST):
        self.client = grpcclient.InferenceServerClient(
            url=address,
            channel_args=[
                ("grpc.default_authority", authority),
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
            ],
        )

    def __enter__(self) -> grpcclient.InferenceServerClient:
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def stack():
    repo = model_repository(
        EXAMPLES / "intent", EXAMPLES / "mlp", TEST_MODELS / "identity_fp32", TEST_MODELS / "spin"
    )
    servers = [ServerProcess(repo.name, env={"POD_NAME": name}) for name in BACKENDS]
    proxy = None
    try:
        for server in servers:
            server.wait_ready()
        proxy = HAProxy([s.grpc for s in servers])
        with Through(proxy.address) as client:
            wait_until(lambda: _ready(client), 30, "the proxy to pass requests")
        yield proxy, servers
    finally:
        if proxy:
            proxy.close()
        for server in servers:
            server.stop()
        repo.cleanup()


def _ready(client) -> bool:
    try:
        return client.is_server_ready()
    except InferenceServerException:
        return False


def test_unary_calls_spread_over_both_servers(stack):
    proxy, _ = stack
    seen = Counter()
    with Through(proxy.address) as client:
        # One client, one HTTP/2 connection: spread only if the proxy
        # balances per request.
        for _ in range(40):
            labels, _, who = infer_intent(client, [GREETING])
            assert labels == ["greeting"]
            seen[who] += 1
    assert set(seen) == set(BACKENDS), seen
    assert min(seen.values()) >= 10, seen
    print(f"40 requests on one connection: {dict(seen)}")


@pytest.mark.skipif(not GRPCURL.is_file(), reason="grpcurl not installed")
def test_grpcurl_reflection_health_and_inference_through_the_route(stack):
    proxy, _ = stack
    flags = ("-authority", HOST)
    listed = grpcurl(proxy.address, "list", flags=flags)
    assert listed.returncode == 0, listed.stderr
    assert "inference.GRPCInferenceService" in listed.stdout.split()
    checked = grpcurl(
        proxy.address, "grpc.health.v1.Health/Check",
        flags=(*flags, "-d", '{"service":"inference.GRPCInferenceService"}'),
    )
    assert checked.returncode == 0 and '"SERVING"' in checked.stdout, checked
    answer = grpcurl_infer(proxy.address, intent_request([GREETING]), flags=flags)
    label = next(i for i, o in enumerate(answer["outputs"]) if o["name"] == "label")
    assert raw_bytes_elements(base64.b64decode(answer["rawOutputContents"][label])) == [b"greeting"]
    # The route's Host rule: another host gets HTTP 404 (gRPC UNIMPLEMENTED).
    with Through(proxy.address, authority="elsewhere.example.com") as client:
        with pytest.raises(InferenceServerException) as unrouted:
            client.is_server_live()
    assert unrouted.value.status() == "StatusCode.UNIMPLEMENTED", unrouted.value
    assert "404" in unrouted.value.message(), unrouted.value


def test_error_codes_and_trailers_pass(stack):
    """A gRPC status travels in HTTP/2 trailers (or a trailers-only
    answer): codes and messages must arrive intact, and a successful call
    must end with its trailers (grpc-status 0), or clients report INTERNAL."""
    proxy, _ = stack
    with Through(proxy.address) as client:
        with pytest.raises(InferenceServerException) as missing:
            client.infer("no_such_model", [])
        assert missing.value.status() == "StatusCode.NOT_FOUND", missing.value
        assert "no_such_model" in missing.value.message()

        bad = grpcclient.InferInput("input", [1, 784], "FP64")
        bad.set_data_from_numpy(np.zeros((1, 784), dtype=np.float64))
        with pytest.raises(InferenceServerException) as wrong:
            client.infer("mlp", [bad])
        assert wrong.value.status() == "StatusCode.INVALID_ARGUMENT", wrong.value
        assert "FP64" in wrong.value.message() and "FP32" in wrong.value.message()

        output, _ = infer_mlp(client, np.ones((1, 784), dtype=np.float32))
        assert output.shape == (1, 10)
    if GRPCURL.is_file():
        # grpcurl -v shows the trailers and the status they carry.
        proc = grpcurl(
            proxy.address, "inference.GRPCInferenceService/ServerLive",
            flags=("-authority", HOST, "-v"),
        )
        assert proc.returncode == 0, proc.stderr
        assert "Response trailers received" in proc.stdout, proc.stdout
        proc = grpcurl(
            proxy.address, "inference.GRPCInferenceService/ModelMetadata",
            flags=("-authority", HOST, "-d", '{"name":"no_such_model"}'),
        )
        assert proc.returncode != 0 and "Code: NotFound" in proc.stderr, proc.stderr


def test_streaming_calls_pass(stack):
    proxy, _ = stack
    answers: queue.Queue = queue.Queue()
    with Through(proxy.address) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        phrases = [GREETING, "bye, see you later", "will it rain tomorrow in Oslo"] * 10
        for i, phrase in enumerate(phrases):
            x = np.array([[phrase]], dtype=object)
            inp = grpcclient.InferInput("text", [1, 1], "BYTES")
            inp.set_data_from_numpy(x)
            client.async_stream_infer("intent", [inp], request_id=str(i))
        # An error inside the stream comes back as a message, and the
        # stream goes on.
        client.async_stream_infer("no_such_model", [], request_id="bad")
        got = [answers.get(timeout=60) for _ in range(len(phrases) + 1)]
        client.stop_stream()
    errors = [e for _, e in got if e is not None]
    results = {r.get_response().id: r for r, e in got if e is None}
    assert len(errors) == 1 and "no_such_model" in str(errors[0]), errors
    assert len(results) == len(phrases)
    for i, phrase in enumerate(phrases):
        label = results[str(i)].as_numpy("label").reshape(-1)[0]
        label = label.decode() if isinstance(label, bytes) else label
        if phrase == GREETING:
            assert label == "greeting"
    # One stream is one HTTP/2 request: one server answers all of it.
    assert len({served_by(r) for r in results.values()}) == 1


def test_a_100_mb_message_passes_both_ways(stack):
    proxy, _ = stack
    n = 100 * 1024 * 1024 // 4  # 100 MiB of FP32
    x = np.arange(n, dtype=np.float32).reshape(1, n)
    with Through(proxy.address) as client:
        inp = grpcclient.InferInput("INPUT0", [1, n], "FP32")
        inp.set_data_from_numpy(x)
        started = time.monotonic()
        result = client.infer("identity_fp32", [inp], client_timeout=300)
        took = time.monotonic() - started
        y = result.as_numpy("OUTPUT0")
    assert y.shape == (1, n)
    assert np.array_equal(x, y)
    print(f"100 MiB in and out through HAProxy: {took:.1f} s")


def test_a_server_sigtermed_under_load_fails_no_request(stack):
    """Clients keep calling through the proxy while one server is SIGTERMed:
    it drains what it has and exits 0, the proxy sends the rest to the
    other, and not one request fails. (Last in the module: one server is
    left.)"""
    proxy, servers = stack
    stop = threading.Event()
    failures: list[str] = []
    served: list[tuple[float, str]] = []
    lock = threading.Lock()

    def client_loop(slow: bool):
        with Through(proxy.address) as client:
            x = np.ones((1, 784), dtype=np.float32)
            while not stop.is_set():
                try:
                    if slow:
                        # About 0.2 s of work: some are in flight on the
                        # server when it gets SIGTERM, and must finish.
                        who = served_by(spin(client, 2000))
                    else:
                        _, who = infer_mlp(client, x)
                    with lock:
                        served.append((time.monotonic(), who))
                except Exception as e:  # noqa: BLE001 - every failure counts
                    with lock:
                        failures.append(str(e))

    threads = [threading.Thread(target=client_loop, args=(i < 2,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until(
            lambda: len(served) >= 100 and {w for _, w in served} == set(BACKENDS),
            60, "both servers answering under load",
        )
        victim, _ = servers
        in_flight = metric(victim.metrics, "oxserve_inflight_requests")
        signalled = time.monotonic()
        victim.terminate()
        code = victim.wait(timeout=60)
        exited = time.monotonic()
        # Keep the load on until the survivor has answered a good while on
        # its own.
        wait_until(
            lambda: sum(1 for t, w in served if t > exited and w == BACKENDS[1]) >= 200,
            60, "the survivor serving alone",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert code == 0, victim.output()
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:3]}"
    after = Counter(w for t, w in served if t > exited)
    assert set(after) == {BACKENDS[1]}, after
    before = Counter(w for t, w in served if t < signalled)
    print(
        f"SIGTERM under load: {len(served)} requests, 0 failed; before the signal {dict(before)}, "
        f"after the exit {dict(after)}; {in_flight:.0f} in flight on the victim just before "
        f"the signal; it drained and exited 0 in {exited - signalled:.2f} s"
    )
