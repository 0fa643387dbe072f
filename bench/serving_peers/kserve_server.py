"""KServe peer: a minimal custom `kserve.Model` served by KServe's Python `ModelServer`.

Run by bench/serving.py in its own virtualenv (kserve, onnxruntime, tokenizers). KServe reads its own
flags from sys.argv, e.g. `--grpc_port 9001 --http_port 9000 --enable_latency_logging false`.
Model name from BENCH_MODEL_NAME (default `cola`); input `text` BYTES [n] -> `label` INT64 [n],
`probabilities` FP32 [n, 2], the same contract as our server, over gRPC and over REST (JSON).
"""

import os

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput
from peer_common import LABEL_OUTPUT, PROBABILITIES_OUTPUT, TEXT_INPUT, classify, load_classifier


def _output(name: str, array: np.ndarray, datatype: str) -> InferOutput:
    # A numpy array as data makes KServe send it as raw_output_contents, like our server does.
    return InferOutput(name=name, shape=list(array.shape), datatype=datatype, data=array)


class ColaModel(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.classifier = None

    def load(self) -> bool:
        self.classifier = load_classifier()
        self.ready = True
        return self.ready

    # A plain (sync) predict, as most custom KServe models are written: KServe calls it on its event loop.
    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        text = payload.get_input_by_name(TEXT_INPUT)
        if text is None or text.datatype != "BYTES":
            raise InvalidInput(f"expected one BYTES input '{TEXT_INPUT}'")
        # gRPC's raw BYTES arrive as bytes, REST's JSON strings as str.
        texts = [
            item.decode("utf-8") if isinstance(item, bytes) else str(item)
            for item in text.as_numpy().reshape(-1)
        ]
        labels, probabilities = classify(self.classifier, texts)
        outputs = [
            _output(LABEL_OUTPUT, labels, "INT64"),
            _output(PROBABILITIES_OUTPUT, probabilities.astype(np.float32), "FP32"),
        ]
        # use_binary_outputs stays False: in KServe 0.21 True makes to_grpc test an ndarray's truth value.
        # A REST request without an id has id None, which KServe's REST response model refuses.
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


if __name__ == "__main__":
    model = ColaModel(os.environ.get("BENCH_MODEL_NAME", "cola"))
    model.load()
    ModelServer().start([model])
