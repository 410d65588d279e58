"""Serves examples/models/mlp with Triton Inference Server through PyTriton,
for comparing oxserve with Triton on the same model and machine.

PyPI's nvidia-pytriton carries a real tritonserver binary, but only its
Python backend: the model runs in ONNX Runtime called from Python, with
Triton's dynamic batcher in front (max batch 64, like oxserve's default).

    python3 -m venv /tmp/pt && /tmp/pt/bin/pip install nvidia-pytriton onnxruntime==1.31.1
    /tmp/pt/bin/python benches/triton/serve_mlp.py --grpc-port 8101
    perf_analyzer -m mlp -i grpc -u 127.0.0.1:8101 --concurrency-range 1:32:8
"""

import argparse
import pathlib

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-port", type=int, default=8101)
    parser.add_argument("--http-port", type=int, default=8100)
    parser.add_argument("--metrics-port", type=int, default=8102)
    parser.add_argument("--model", default=str(ROOT / "examples/models/mlp/1/model.onnx"))
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.intra_op_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])

    @batch
    def infer(input):  # noqa: A002 - the model's input is called "input"
        (output,) = session.run(["output"], {"input": input})
        return {"output": output}

    config = TritonConfig(
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
            model_name="mlp",
            infer_func=infer,
            inputs=[Tensor(name="input", dtype=np.float32, shape=(784,))],
            outputs=[Tensor(name="output", dtype=np.float32, shape=(10,))],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=DynamicBatcher()),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
