"""One ONNX model run by onnxruntime, as every Python peer serves it.

Triton (PyTriton), KServe and MLServer have no ONNX Runtime backend that
PyPI ships, so each peer runs the model through this class: one
`InferenceSession` on the CPU with the same thread settings as oxserve's
defaults (1 intra-op thread, 1 inter-op thread), inputs and outputs
described in the protocol's terms from the model file itself.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnxruntime as ort

# ONNX Runtime's element types -> (protocol datatype, numpy dtype).
_TYPES = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(uint16)": ("UINT16", np.uint16),
    "tensor(uint32)": ("UINT32", np.uint32),
    "tensor(uint64)": ("UINT64", np.uint64),
    "tensor(bool)": ("BOOL", np.bool_),
    "tensor(string)": ("BYTES", np.object_),
}


@dataclasses.dataclass
class Spec:
    """One input or output: protocol datatype, numpy dtype, shape (-1 for a
    variable dimension, dimension 0 being the batch)."""

    name: str
    datatype: str
    dtype: type
    shape: list[int]


def _spec(arg) -> Spec:
    if arg.type not in _TYPES:
        raise ValueError(f"{arg.name}: element type {arg.type} is not served by the peers")
    datatype, dtype = _TYPES[arg.type]
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape]
    return Spec(arg.name, datatype, dtype, shape)


class OnnxModel:
    """An ONNX Runtime session with its inputs and outputs described."""

    def __init__(self, path: str, intra_op_threads: int | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or int(
            os.environ.get("PEER_INTRA_OP_THREADS", "1")
        )
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self.output_names = [o.name for o in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the model. BYTES inputs may hold bytes or str; BYTES outputs
        come back as bytes objects, as the protocol carries them."""
        results = self.session.run(self.output_names, feeds)
        out = {}
        for spec, value in zip(self.outputs, results):
            if spec.datatype == "BYTES":
                flat = [v.encode() if isinstance(v, str) else v for v in value.ravel()]
                value = np.array(flat, dtype=np.object_).reshape(value.shape)
            out[spec.name] = value
        return out
