"""Serves one ONNX model with KServe's Python model server (`kserve.ModelServer`).

KServe has no ONNX runtime of its own in Python (its ONNX support is Triton
or MLServer behind an InferenceService), so this is the documented way to
serve a model with it: a custom `kserve.Model` whose `predict` runs
onnxruntime (onnx_model.py). The gRPC server (grpcio, `enable_grpc`) speaks
KServe v2 (`inference.GRPCInferenceService`: ServerLive/Ready,
ModelReady, ServerMetadata, ModelMetadata, ModelInfer, RepositoryModelLoad
and Unload; no grpc.health.v1, no ModelConfig or ModelStatistics). The
Python server has no dynamic batching (KServe batches in its agent sidecar),
so every request is one onnxruntime run.

    kserve_server.py --name mlp --model examples/models/mlp/1/model.onnx \\
        --grpc-port 8201 --http-port 8200

KServe listens on every address ("[::]" for gRPC, "0.0.0.0" for REST) with
no setting to change it; for a benchmark on one machine both are bound to
127.0.0.1 instead, by wrapping the two calls that bind.
"""

import argparse

import grpc.aio
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from onnx_model import OnnxModel


def loopback_only() -> None:
    """Binds KServe's servers to 127.0.0.1 rather than every address."""
    make_server = grpc.aio.server

    def server(*args, **kwargs):
        s = make_server(*args, **kwargs)
        add = s.add_insecure_port
        s.add_insecure_port = lambda address: add(address.replace("[::]", "127.0.0.1"))
        return s

    grpc.aio.server = server

    class Config(uvicorn.Config):
        def __init__(self, *args, **kwargs):
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    uvicorn.Config = Config


class Onnx(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.model = OnnxModel(path)
        self.ready = True

    def get_input_types(self):
        return [
            {"name": i.name, "datatype": i.datatype, "shape": i.shape} for i in self.model.inputs
        ]

    def get_output_types(self):
        return [
            {"name": o.name, "datatype": o.datatype, "shape": o.shape} for o in self.model.outputs
        ]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        results = self.model.run(feeds)
        outputs = []
        for spec in self.model.outputs:
            value = results[spec.name]
            output = InferOutput(name=spec.name, shape=list(value.shape), datatype=spec.datatype)
            output.set_data_from_numpy(value, binary_data=True)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id,
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True, help="the .onnx file")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    loopback_only()
    ModelServer(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        enable_grpc=True,
        enable_latency_logging=False,
    ).start([Onnx(args.name, args.model)])


if __name__ == "__main__":
    main()
