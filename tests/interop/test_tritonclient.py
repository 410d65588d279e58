"""Interop: NVIDIA's tritonclient (gRPC) against a running oxserve.

Run through tests/interop/run.sh, which starts the server on
examples/models and sets OXSERVE_ADDR=host:port. Results are compared with
onnxruntime running the same model files directly in this process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ADDR = os.environ.get("OXSERVE_ADDR")
if not ADDR:
    pytest.skip("OXSERVE_ADDR is not set (run tests/interop/run.sh)", allow_module_level=True)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"
INTENT_CLASSES = 6

PHRASES = [
    "Hi, how are you?",
    "thanks a lot for your help",
    "will it rain tomorrow in Oslo",
    "where is my package?",
    "bye, see you later",
    "I need help with my account",
    "Ünïcödé 🙂 text",
]


@pytest.fixture(scope="module")
def client():
    c = grpcclient.InferenceServerClient(url=ADDR)
    yield c
    c.close()


def local_session(model: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(MODELS / model / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"])


def tensors(meta_tensors) -> dict:
    return {t.name: (t.datatype, list(t.shape)) for t in meta_tensors}


def fp32_input(name: str, x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def text_input(phrases) -> grpcclient.InferInput:
    x = np.array(phrases, dtype=object).reshape(-1, 1)
    inp = grpcclient.InferInput("text", list(x.shape), "BYTES")
    inp.set_data_from_numpy(x)
    return inp


# --------------------------------------------------------------------------
# health and metadata


def test_server_live_and_ready(client):
    assert client.is_server_live()
    assert client.is_server_ready()


def test_models_ready(client):
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", model_version="1")
    assert client.is_model_ready("intent")


def test_unknown_model_not_ready(client):
    # Servers differ: ready=false or a NOT_FOUND error are both fine.
    try:
        assert not client.is_model_ready("no_such_model")
    except InferenceServerException as e:
        assert "NOT_FOUND" in str(e.status()), (e.status(), e.message())


def test_server_metadata(client):
    md = client.get_server_metadata()
    assert md.name, md
    assert md.version, md
    as_json = client.get_server_metadata(as_json=True)
    assert as_json["name"] == md.name


def test_model_metadata_mlp(client):
    md = client.get_model_metadata("mlp")
    assert md.name == "mlp"
    assert md.platform == "onnxruntime_onnx"
    assert "1" in list(md.versions)
    assert tensors(md.inputs) == {"input": ("FP32", [-1, 784])}
    assert tensors(md.outputs) == {"output": ("FP32", [-1, 10])}
    # Asking for the version explicitly gives the same answer.
    md1 = client.get_model_metadata("mlp", model_version="1")
    assert tensors(md1.inputs) == tensors(md.inputs)
    assert md1.platform == md.platform


def test_model_metadata_intent(client):
    md = client.get_model_metadata("intent")
    assert md.name == "intent"
    assert md.platform == "onnxruntime_onnx"
    assert tensors(md.inputs) == {"text": ("BYTES", [-1, 1])}
    assert tensors(md.outputs) == {
        "label": ("BYTES", [-1]),
        "probabilities": ("FP32", [-1, INTENT_CLASSES]),
    }
    # Outputs are listed in the model's order.
    assert [t.name for t in md.outputs] == ["label", "probabilities"]


# --------------------------------------------------------------------------
# inference


def test_infer_mlp_matches_onnxruntime(client):
    x = np.random.default_rng(42).random((3, 784), dtype=np.float32)
    res = client.infer("mlp", [fp32_input("input", x)], request_id="mlp-batch-3")
    out = res.as_numpy("output")
    assert out is not None
    assert out.dtype == np.float32
    assert out.shape == (3, 10)
    (want,) = local_session("mlp").run(["output"], {"input": x})
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)

    resp = res.get_response()
    assert resp.model_name == "mlp"
    assert resp.id == "mlp-batch-3"
    assert [o.name for o in resp.outputs] == ["output"]
    assert len(resp.raw_output_contents) == 1
    assert len(resp.raw_output_contents[0]) == 3 * 10 * 4


def test_infer_mlp_single_row(client):
    x = np.zeros((1, 784), dtype=np.float32)
    out = client.infer("mlp", [fp32_input("input", x)]).as_numpy("output")
    (want,) = local_session("mlp").run(["output"], {"input": x})
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_infer_intent_matches_onnxruntime(client):
    res = client.infer("intent", [text_input(PHRASES)])
    labels = res.as_numpy("label")
    probs = res.as_numpy("probabilities")
    assert labels is not None and probs is not None
    assert labels.shape == (len(PHRASES),)
    assert probs.shape == (len(PHRASES), INTENT_CLASSES)
    assert probs.dtype == np.float32
    got_labels = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in labels]

    x = np.array(PHRASES, dtype=object).reshape(-1, 1)
    want_labels, want_probs = local_session("intent").run(["label", "probabilities"], {"text": x})
    assert got_labels == [str(v) for v in want_labels]
    np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-6)
    assert got_labels[0] == "greeting"


def test_infer_requested_output_only(client):
    res = client.infer(
        "intent",
        [text_input(["Hi, how are you?"])],
        outputs=[grpcclient.InferRequestedOutput("label")],
    )
    resp = res.get_response()
    assert [o.name for o in resp.outputs] == ["label"]
    assert len(resp.raw_output_contents) == 1
    assert res.as_numpy("probabilities") is None
    labels = res.as_numpy("label")
    assert [v.decode() for v in labels] == ["greeting"]


# --------------------------------------------------------------------------
# errors


def test_unknown_model_infer_is_not_found(client):
    x = np.zeros((1, 784), dtype=np.float32)
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("no_such_model", [fp32_input("input", x)])
    assert "NOT_FOUND" in str(excinfo.value.status()), (excinfo.value.status(), excinfo.value.message())
    assert "no_such_model" in excinfo.value.message()


def test_unknown_model_metadata_is_not_found(client):
    with pytest.raises(InferenceServerException) as excinfo:
        client.get_model_metadata("no_such_model")
    assert "NOT_FOUND" in str(excinfo.value.status()), (excinfo.value.status(), excinfo.value.message())


def test_datatype_mismatch_is_invalid_argument(client):
    x = np.zeros((1, 784), dtype=np.float64)
    inp = grpcclient.InferInput("input", [1, 784], "FP64")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("mlp", [inp])
    assert "INVALID_ARGUMENT" in str(excinfo.value.status()), (excinfo.value.status(), excinfo.value.message())


def test_shape_mismatch_is_invalid_argument(client):
    x = np.zeros((1, 783), dtype=np.float32)
    with pytest.raises(InferenceServerException) as excinfo:
        client.infer("mlp", [fp32_input("input", x)])
    assert "INVALID_ARGUMENT" in str(excinfo.value.status()), (excinfo.value.status(), excinfo.value.message())


def test_server_still_serves_after_errors(client):
    # A burst of bad requests must not poison anything.
    assert client.is_server_ready()
    x = np.ones((2, 784), dtype=np.float32)
    out = client.infer("mlp", [fp32_input("input", x)]).as_numpy("output")
    assert out.shape == (2, 10)


# --------------------------------------------------------------------------
# model repository extension (the server runs in explicit mode)


def test_repository_index_lists_the_models(client):
    index = client.get_model_repository_index(as_json=True)
    rows = {(m["name"], m.get("version", ""), m.get("state", "")) for m in index["models"]}
    assert ("mlp", "1", "READY") in rows
    assert ("intent", "1", "READY") in rows


def test_load_with_a_config_override_and_unload(client):
    import json

    # A JSON configuration replaces config.pbtxt for this load.
    client.load_model("mlp", config=json.dumps({"max_batch_size": 8}))
    assert client.get_model_config("mlp", as_json=True)["config"]["max_batch_size"] == 8
    client.unload_model("mlp")
    assert not client.is_model_ready("mlp")
    with pytest.raises(InferenceServerException) as e:
        client.infer("mlp", [fp32_input("input", np.zeros((1, 784), dtype=np.float32))])
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    # Back as it was: the repository's own configuration.
    client.load_model("mlp")
    assert client.is_model_ready("mlp")
    assert client.get_model_config("mlp", as_json=True)["config"]["max_batch_size"] != 8


def test_load_from_files_in_the_request(client):
    import json

    model = (MODELS / "mlp" / "1" / "model.onnx").read_bytes()
    client.load_model(
        "mlp_uploaded",
        config=json.dumps({"max_batch_size": 4}),
        files={"file:1/model.onnx": model},
    )
    x = np.random.default_rng(3).random((2, 784), dtype=np.float32)
    got = client.infer("mlp_uploaded", [fp32_input("input", x)]).as_numpy("output")
    (want,) = local_session("mlp").run(None, {"input": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    client.unload_model("mlp_uploaded")


def test_bad_load_requests_are_refused_and_the_model_serves_on(client):
    with pytest.raises(InferenceServerException) as e:
        client.load_model("mlp", config="{not json")
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as e:
        client.load_model("no_such_model")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert client.is_model_ready("mlp")
