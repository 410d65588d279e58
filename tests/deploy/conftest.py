"""Fixtures shared by test_monitoring.py and test_dashboard.py.

The list of metrics those checks compare against is not written down: the
`exported` fixture starts target/debug/oxserve (or OXSERVE_BIN) with the
monitored overlay's config file, sends one good and one bad inference, and
scrapes `/metrics` once for the whole run. `monitored` is the monitoring
component rendered with each overlay."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from deploy import MONITORED, ROOT, config_text, render
from exposition import Exposition, parse_exposition
from test_server import GRPCURL, Server


def _send_requests(address: str) -> None:
    """One inference that succeeds and one the server refuses
    (INVALID_ARGUMENT), so that oxserve_requests_total has series."""
    good = (ROOT / "tests" / "interop" / "requests" / "mlp.json").read_text()
    bad = json.dumps({
        "model_name": "mlp", "id": "monitoring-check",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3],
                    "contents": {"fp32_contents": [1, 2, 3]}}],
    })
    if GRPCURL.is_file():
        for body, ok in ((good, True), (bad, False)):
            result = subprocess.run(
                [str(GRPCURL), "-plaintext", "-d", "@", address,
                 "inference.GRPCInferenceService/ModelInfer"],
                input=body, capture_output=True, text=True, timeout=30,
            )
            assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return
    # Without grpcurl (scripts/install-grpcurl.sh), tritonclient from the venv.
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(address)
    data = json.loads(good)["inputs"][0]
    x = grpcclient.InferInput("input", data["shape"], "FP32")
    x.set_data_from_numpy(np.array(data["contents"]["fp32_contents"], np.float32).reshape(data["shape"]))
    client.infer("mlp", [x])
    wrong = grpcclient.InferInput("input", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("mlp", [wrong])


@pytest.fixture(scope="session")
def exported() -> Exposition:
    """The real server, started with the monitored overlay's config file."""
    _, text = config_text(render("cpu+monitoring"))
    server = Server(text)
    try:
        server.wait_ready()
        _send_requests(server.address)
        with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
            body = r.read().decode()
    finally:
        server.stop()
    return parse_exposition(body)


@pytest.fixture(scope="module", params=MONITORED)
def monitored(request):
    """The monitoring component rendered with each overlay."""
    return render(request.param)
