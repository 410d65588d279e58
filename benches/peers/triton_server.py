"""Serves one ONNX model with Triton Inference Server through PyTriton.

PyPI's nvidia-pytriton carries a real tritonserver binary but only its
Python backend: the model runs in ONNX Runtime called from Python
(onnx_model.py), behind Triton's dynamic batcher (max batch 64, no queue
delay, like oxserve's defaults). Triton's gRPC server speaks KServe v2 with
Triton's extensions.

    triton_server.py --name mlp --model examples/models/mlp/1/model.onnx \\
        --grpc-port 8101 --http-port 8100 --metrics-port 8102

The Python backend's stub needs the interpreter's shared libpython on
LD_LIBRARY_PATH (benches/peers/run.py sets it).
"""

import argparse
import logging

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

from onnx_model import OnnxModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True, help="the .onnx file")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model = OnnxModel(args.model)
    # Triton's shapes leave out the batch dimension. A model output that is
    # only the batch dimension (intent's `label`) becomes [batch, 1]: Triton
    # wants at least one dimension besides the batch.
    flat = {o.name for o in model.outputs if len(o.shape) == 1}

    def triton_dtype(spec):
        return np.bytes_ if spec.datatype == "BYTES" else spec.dtype

    @batch
    def infer(**inputs):
        outputs = model.run(inputs)
        return {name: v.reshape(-1, 1) if name in flat else v for name, v in outputs.items()}

    config = TritonConfig(
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
    )
    # PyTriton guards the statistics RPC (which perf_analyzer calls) with a
    # random token by default; a benchmark on loopback needs no guard.
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[
                Tensor(name=i.name, dtype=triton_dtype(i), shape=tuple(i.shape[1:]))
                for i in model.inputs
            ],
            outputs=[
                Tensor(
                    name=o.name,
                    dtype=triton_dtype(o),
                    shape=(1,) if o.name in flat else tuple(o.shape[1:]),
                )
                for o in model.outputs
            ],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=DynamicBatcher()),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
