"""A KServe Python model server for the Rust SDK's interop test.

Not oxserve: KServe's own gRPC server (``kserve.ModelServer``, grpcio), so
the SDK is checked against a second implementation of the v2 protocol.

Models:
  echo        answers every input as an output of the same name, datatype,
              shape and values, as numpy arrays: KServe sends them in
              ``raw_output_contents``.
  echo_typed  the same, as Python lists: KServe sends them in the typed
              ``contents`` fields instead.
  fail        always raises, to show how KServe's errors reach the client.

Usage: kserve_server.py <grpc_port> <http_port>
"""

import sys

import kserve
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Echo(Model):
    def __init__(self, name: str, as_lists: bool):
        super().__init__(name)
        self.as_lists = as_lists
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        outputs = []
        for tensor in payload.inputs:
            array = tensor.as_numpy()
            output = InferOutput(
                name=tensor.name, shape=list(tensor.shape), datatype=tensor.datatype
            )
            if self.as_lists:
                output.data = array.flatten().tolist()
            else:
                # Passing the array as `data` trips KServe's own to_grpc
                # (it tests the array's truth value); this is the supported way.
                output.set_data_from_numpy(array, binary_data=True)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id,
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=not self.as_lists,
        )


class Fail(Model):
    def __init__(self):
        super().__init__("fail")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        raise kserve.errors.InvalidInput("fail: this model always fails")


if __name__ == "__main__":
    grpc_port, http_port = int(sys.argv[1]), int(sys.argv[2])
    ModelServer(grpc_port=grpc_port, http_port=http_port, enable_grpc=True).start(
        [Echo("echo", as_lists=False), Echo("echo_typed", as_lists=True), Fail()]
    )
