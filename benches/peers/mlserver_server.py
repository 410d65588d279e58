"""Serves one ONNX model with Seldon's MLServer, through mlserver_onnx.py.

Writes an MLServer configuration into --workdir (settings.json: loopback
address and the given ports; the model's model-settings.json: the custom
runtime, the .onnx file, and the inputs and outputs read from it, which
MLServer's ModelMetadata reports), then replaces itself with
`mlserver start`. MLServer's own defaults stay, except `debug` (off, as in
production: it only changes logging). Its adaptive batching is off by
default and stays off unless --max-batch-size is given.

    mlserver_server.py --name mlp --model examples/models/mlp/1/model.onnx \\
        --workdir /tmp/mls --grpc-port 8301 --http-port 8300 --metrics-port 8302
"""

import argparse
import json
import os
import pathlib
import shutil
import sys

from onnx_model import OnnxModel

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True, help="the .onnx file")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=0)
    parser.add_argument("--max-batch-time", type=float, default=0.0)
    args = parser.parse_args()

    model = OnnxModel(args.model)
    work = pathlib.Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    (work / args.name).mkdir(parents=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
    }
    (work / "settings.json").write_text(json.dumps(settings, indent=2))

    def tensors(specs):
        return [{"name": s.name, "datatype": s.datatype, "shape": s.shape} for s in specs]

    model_settings = {
        "name": args.name,
        "implementation": "mlserver_onnx.OnnxRuntime",
        "parameters": {"uri": str(pathlib.Path(args.model).resolve()), "version": "1"},
        "inputs": tensors(model.inputs),
        "outputs": tensors(model.outputs),
    }
    if args.max_batch_size > 0:
        model_settings["max_batch_size"] = args.max_batch_size
        model_settings["max_batch_time"] = args.max_batch_time
    (work / args.name / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    del model

    # MLServer's inference workers are separate processes: they find the
    # runtime through PYTHONPATH.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    mlserver = pathlib.Path(sys.executable).with_name("mlserver")
    os.execve(mlserver, [str(mlserver), "start", str(work)], env)


if __name__ == "__main__":
    main()
