"""Interop: tritonclient (gRPC and HTTP) against an oxserve run with
--api-keys, sending the key the way Triton's users do, as
headers={'authorization': 'Bearer ...'}.

Run through tests/interop/api_keys.sh (called by tests/interop/run.sh),
which starts the server with a key file and sets OXSERVE_KEYS_ADDR,
OXSERVE_KEYS_HTTP_ADDR and OXSERVE_API_KEY.
"""

from __future__ import annotations

import os
import queue

import pytest

GRPC_ADDR = os.environ.get("OXSERVE_KEYS_ADDR")
HTTP_ADDR = os.environ.get("OXSERVE_KEYS_HTTP_ADDR")
KEY = os.environ.get("OXSERVE_API_KEY")
if not (GRPC_ADDR and HTTP_ADDR and KEY):
    pytest.skip("OXSERVE_KEYS_* are not set (run tests/interop/api_keys.sh)", allow_module_level=True)

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

GOOD = {"authorization": f"Bearer {KEY}"}
WRONG = {"authorization": "Bearer not-the-key"}


@pytest.fixture(scope="module")
def grpc():
    c = grpcclient.InferenceServerClient(url=GRPC_ADDR)
    yield c
    c.close()


@pytest.fixture(scope="module")
def http():
    c = httpclient.InferenceServerClient(url=HTTP_ADDR)
    yield c
    c.close()


def mlp_inputs(module):
    x = np.full((1, 784), 0.5, dtype=np.float32)
    inp = module.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def refused(call, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call(**kwargs)
    assert "not-the-key" not in str(info.value) and KEY not in str(info.value)
    return info.value


def test_grpc_health_is_open_and_everything_else_needs_the_key(grpc):
    assert grpc.is_server_live()
    assert grpc.is_server_ready()
    assert grpc.is_model_ready("mlp")

    e = refused(grpc.get_server_metadata)
    assert e.status() == "StatusCode.UNAUTHENTICATED", e
    assert "metadata" in e.message()
    e = refused(grpc.get_server_metadata, headers=WRONG)
    assert e.status() == "StatusCode.PERMISSION_DENIED", e
    assert grpc.get_server_metadata(headers=GOOD).name

    e = refused(grpc.infer, model_name="mlp", inputs=mlp_inputs(grpcclient))
    assert e.status() == "StatusCode.UNAUTHENTICATED", e
    e = refused(grpc.infer, model_name="mlp", inputs=mlp_inputs(grpcclient), headers=WRONG)
    assert e.status() == "StatusCode.PERMISSION_DENIED", e
    result = grpc.infer("mlp", mlp_inputs(grpcclient), headers=GOOD)
    assert result.as_numpy("output").shape == (1, 10)

    for call in (grpc.get_model_config, grpc.get_inference_statistics):
        e = refused(call, model_name="mlp")
        assert e.status() == "StatusCode.UNAUTHENTICATED", e
        call(model_name="mlp", headers=GOOD)
    e = refused(grpc.get_model_repository_index)
    assert e.status() == "StatusCode.UNAUTHENTICATED", e
    assert grpc.get_model_repository_index(headers=GOOD).models


def test_grpc_stream_carries_the_key(grpc):
    answers: queue.Queue = queue.Queue()
    grpc.start_stream(callback=lambda result, error: answers.put((result, error)), headers=GOOD)
    try:
        grpc.async_stream_infer("mlp", mlp_inputs(grpcclient))
        result, error = answers.get(timeout=30)
        assert error is None, error
        assert result.as_numpy("output").shape == (1, 10)
    finally:
        grpc.stop_stream()


def test_http_answers_401_403_and_200(http):
    assert http.is_server_live()
    assert http.is_server_ready()

    e = refused(http.get_server_metadata)
    assert e.status() == "401", e
    assert "metadata" in e.message()
    e = refused(http.get_server_metadata, headers=WRONG)
    assert e.status() == "403", e
    assert http.get_server_metadata(headers=GOOD)["name"]

    e = refused(http.infer, model_name="mlp", inputs=mlp_inputs(httpclient))
    assert e.status() == "401", e
    result = http.infer("mlp", mlp_inputs(httpclient), headers=GOOD)
    assert result.as_numpy("output").shape == (1, 10)
