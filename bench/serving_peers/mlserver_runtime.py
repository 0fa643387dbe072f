"""MLServer peer: a minimal custom `MLModel` runtime, loaded by `mlserver start` through the
model-settings.json that bench/serving.py writes (`"implementation": "mlserver_runtime.ColaRuntime"`,
with this directory on PYTHONPATH). Input `text` BYTES [n] -> `label` INT64 [n], `probabilities`
FP32 [n, 2], the same contract as our server.
"""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from peer_common import LABEL_OUTPUT, PROBABILITIES_OUTPUT, TEXT_INPUT, classify, load_classifier


def _output(name: str, array: np.ndarray, datatype: str) -> ResponseOutput:
    # Not NumpyCodec.encode_output: it reshapes a 1-D array to [n, 1], and our contract is label [n].
    # MLServer packs it as raw_output_contents because the request came raw (as tritonclient sends it).
    return ResponseOutput(name=name, shape=list(array.shape), datatype=datatype, data=array.ravel().tolist())


class ColaRuntime(MLModel):
    async def load(self) -> bool:
        self.classifier = load_classifier()
        return True

    # ORT runs inline, as in a typical custom runtime; with parallel_workers >= 1 MLServer runs this in
    # a separate worker process, so the gRPC front end keeps its own core time.
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = [item for item in payload.inputs if item.name == TEXT_INPUT]
        if len(inputs) != 1 or inputs[0].datatype != "BYTES":
            raise InferenceError(f"expected one BYTES input '{TEXT_INPUT}'")
        labels, probabilities = classify(self.classifier, StringCodec.decode_input(inputs[0]))
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            outputs=[
                _output(LABEL_OUTPUT, labels, "INT64"),
                _output(PROBABILITIES_OUTPUT, probabilities, "FP32"),
            ],
        )
