"""Interop: tritonclient (gRPC) with ssl=True and its certificate options
against an oxserve with TLS and mTLS.

Run by tests/interop/tls.sh, which makes the certificates, starts the server
and sets OXSERVE_TLS_ADDR (host:port) and OXSERVE_TLS_DIR (ca.crt,
client.crt, client.key)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ADDR = os.environ.get("OXSERVE_TLS_ADDR")
if not ADDR:
    pytest.skip("OXSERVE_TLS_ADDR is not set (run tests/interop/tls.sh)", allow_module_level=True)

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

DIR = Path(os.environ["OXSERVE_TLS_DIR"])


def client(with_certificate: bool = True, **kwargs) -> grpcclient.InferenceServerClient:
    options = {"ssl": True, "root_certificates": str(DIR / "ca.crt")}
    if with_certificate:
        options |= {
            "private_key": str(DIR / "client.key"),
            "certificate_chain": str(DIR / "client.crt"),
        }
    return grpcclient.InferenceServerClient(url=ADDR, **(options | kwargs))


def test_mtls_client_is_served():
    c = client()
    try:
        assert c.is_server_live()
        assert c.is_server_ready()
        assert c.is_model_ready("mlp")
        meta = c.get_model_metadata("mlp")
        name, datatype = meta.inputs[0].name, meta.inputs[0].datatype
        assert datatype == "FP32"
        width = int(meta.inputs[0].shape[-1])
        x = np.ones((2, width), dtype=np.float32)
        inp = grpcclient.InferInput(name, [2, width], "FP32")
        inp.set_data_from_numpy(x)
        result = c.infer("mlp", [inp])
        assert result.as_numpy(meta.outputs[0].name).shape[0] == 2
    finally:
        c.close()


def test_client_without_certificate_is_refused():
    c = client(with_certificate=False)
    try:
        with pytest.raises(InferenceServerException):
            c.is_server_live(client_timeout=5)
    finally:
        c.close()


def test_plaintext_client_is_refused():
    c = grpcclient.InferenceServerClient(url=ADDR)
    try:
        with pytest.raises(InferenceServerException):
            c.is_server_live(client_timeout=5)
    finally:
        c.close()
