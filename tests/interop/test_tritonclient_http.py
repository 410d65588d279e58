"""Interop: NVIDIA's tritonclient over HTTP (KServe v2 REST) against a
running oxserve, including system shared memory through tritonclient's own
shared_memory utilities, and the log and trace settings.

Run through tests/interop/run.sh, which starts the server on
examples/models and sets OXSERVE_HTTP_ADDR=host:port (and OXSERVE_ADDR for
gRPC). Results are compared with onnxruntime running the same model files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HTTP_ADDR = os.environ.get("OXSERVE_HTTP_ADDR")
GRPC_ADDR = os.environ.get("OXSERVE_ADDR")
if not HTTP_ADDR:
    pytest.skip("OXSERVE_HTTP_ADDR is not set (run tests/interop/run.sh)", allow_module_level=True)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
import tritonclient.utils.shared_memory as shm  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"


@pytest.fixture(scope="module")
def client():
    c = httpclient.InferenceServerClient(url=HTTP_ADDR)
    yield c
    c.close()


def local(model: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(MODELS / model / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"])


def mlp_input(x: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("intent", "1")
    assert not client.is_model_ready("no_such_model")
    md = client.get_server_metadata()
    assert md["name"] == "oxserve"
    for extension in ("binary_tensor_data", "system_shared_memory", "trace", "logging"):
        assert extension in md["extensions"], md
    model = client.get_model_metadata("mlp")
    assert model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]
    config = client.get_model_config("mlp")
    assert config["name"] == "mlp"
    assert config["max_batch_size"] > 0
    stats = client.get_inference_statistics("mlp")
    assert stats["model_stats"][0]["name"] == "mlp"


@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_infer_mlp_matches_onnxruntime(client, binary_in, binary_out):
    x = np.random.default_rng(7).random((3, 784), dtype=np.float32)
    result = client.infer(
        "mlp",
        [mlp_input(x, binary_in)],
        outputs=[httpclient.InferRequestedOutput("output", binary_data=binary_out)],
        request_id="mlp-http",
    )
    out = result.as_numpy("output")
    (want,) = local("mlp").run(["output"], {"input": x})
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert response["id"] == "mlp-http"
    assert response["model_name"] == "mlp"
    # Where the time went, as over gRPC.
    for name in ("queue_ns", "compute_ns", "batch_size", "instance", "served_by"):
        assert name in response["parameters"], response


def test_infer_intent_json_strings(client):
    phrases = np.array([["Hi, how are you?"], ["bye, see you later"]], dtype=object)
    text = httpclient.InferInput("text", [2, 1], "BYTES")
    text.set_data_from_numpy(phrases, binary_data=False)
    result = client.infer("intent", [text], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)])
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    (want,) = local("intent").run(["label"], {"text": phrases})
    assert labels == [str(v) for v in want]
    assert labels[0] == "greeting"


def test_errors_are_raised_with_the_servers_message(client):
    x = np.zeros((1, 783), dtype=np.float32)
    with pytest.raises(InferenceServerException) as e:
        client.infer("mlp", [mlp_input(x)])
    assert "unexpected shape" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer("no_such_model", [mlp_input(np.zeros((1, 784), dtype=np.float32))])
    assert "no_such_model" in e.value.message()
    assert client.is_server_ready()


def test_system_shared_memory_with_tritonclient_utilities(client):
    x = np.random.default_rng(3).random((2, 784), dtype=np.float32)
    in_bytes, out_bytes = x.nbytes, 2 * 10 * 4
    key = f"/oxserve-interop-{os.getpid()}"
    handle = shm.create_shared_memory_region("io", key, in_bytes + out_bytes)
    try:
        shm.set_shared_memory_region(handle, [x])
        client.unregister_system_shared_memory()
        client.register_system_shared_memory("io", key, in_bytes + out_bytes)
        status = client.get_system_shared_memory_status()
        assert [r["name"] for r in status] == ["io"], status

        inp = httpclient.InferInput("input", [2, 784], "FP32")
        inp.set_shared_memory("io", in_bytes)
        out = httpclient.InferRequestedOutput("output", binary_data=True)
        out.set_shared_memory("io", out_bytes, offset=in_bytes)
        result = client.infer("mlp", [inp], outputs=[out])
        meta = result.get_output("output")
        assert meta == {"name": "output", "datatype": "FP32", "shape": [2, 10]}, meta
        got = shm.get_contents_as_numpy(handle, np.float32, [2, 10], offset=in_bytes)
        (want,) = local("mlp").run(["output"], {"input": x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

        # The same region over gRPC.
        if GRPC_ADDR:
            g = grpcclient.InferenceServerClient(url=GRPC_ADDR)
            ginp = grpcclient.InferInput("input", [2, 784], "FP32")
            ginp.set_shared_memory("io", in_bytes)
            gout = grpcclient.InferRequestedOutput("output")
            result = g.infer("mlp", [ginp], outputs=[gout])
            np.testing.assert_allclose(result.as_numpy("output"), want, rtol=1e-5, atol=1e-6)
            g.close()

        # Past the region's end: refused, nothing read.
        bad = httpclient.InferInput("input", [2, 784], "FP32")
        bad.set_shared_memory("io", in_bytes, offset=out_bytes + 8)
        with pytest.raises(InferenceServerException) as e:
            client.infer("mlp", [bad])
        assert "past the end" in e.value.message()
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(handle)
    assert client.get_system_shared_memory_status() == []


def test_log_and_trace_settings(client):
    settings = client.get_log_settings()
    assert settings["log_file"] == ""
    assert client.update_log_settings({"log_verbose_level": 0, "log_info": True})["log_info"] is True
    traces = client.get_trace_settings()
    assert traces["trace_level"] == ["TIMESTAMPS"], traces
    assert client.update_trace_settings(settings={"trace_rate": "10"})["trace_rate"] == "10"
    assert client.update_trace_settings(settings={"trace_rate": None})["trace_rate"] == "1"
