"""An MLServer inference runtime for ONNX models, running onnxruntime.

MLServer ships no ONNX runtime (its runtimes are scikit-learn, XGBoost,
LightGBM, MLflow, Hugging Face, ...), so an ONNX model is served the way
MLServer documents for anything else: a custom `MLModel` subclass, named
by `implementation` in the model's model-settings.json, whose
`parameters.uri` is the .onnx file. mlserver_server.py writes those
settings and starts `mlserver start`.
"""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from onnx_model import OnnxModel


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        self.model = OnnxModel(self._settings.parameters.uri)
        self.dtypes = {i.name: i.dtype for i in self.model.inputs}
        return True

    def _decode(self, request_input) -> np.ndarray:
        # NumpyCodec reads BYTES as fixed-size chunks of the last dimension;
        # the protocol's BYTES elements are variable-length strings.
        if request_input.datatype == "BYTES":
            data = getattr(request_input.data, "root", request_input.data)
            return np.array(list(data), dtype=np.object_).reshape(request_input.shape)
        array = NumpyCodec.decode_input(request_input)
        return array.astype(self.dtypes[request_input.name], copy=False)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: self._decode(i) for i in payload.inputs}
        results = self.model.run(feeds)
        outputs = []
        for spec in self.model.outputs:
            value = results[spec.name]
            if spec.datatype == "BYTES":
                outputs.append(
                    ResponseOutput(
                        name=spec.name,
                        datatype="BYTES",
                        shape=list(value.shape),
                        data=list(value.ravel()),
                    )
                )
            else:
                outputs.append(NumpyCodec.encode_output(spec.name, value))
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
