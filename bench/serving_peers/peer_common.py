"""What the peer servers share with the benchmark: the model's runtime (`sentclf_runtime`, the scorer our
server and the pyfunc run), so every contender runs the identical preprocessing and the identical
InferenceSession settings; only the serving stack around it differs.

Imported by name (bench/serving.py puts serving_peers/ and the runtime on the peers' PYTHONPATH, and
loads this file in its own process for raw ORT). Configured by environment variables, set by
bench/serving.py:
  BENCH_MODEL_DIR    model.onnx, tokenizer.json, serving_config.json (extracted from the server image)
  BENCH_ORT_THREADS  ORT intra-op threads (the bench passes the core count, as it does to our server)
"""

import os

import numpy as np

# The runtime needs only onnxruntime, tokenizers and numpy, which every peer virtualenv has.
from sentclf_runtime.outputs import LABEL_OUTPUT, PROBS_OUTPUT, TEXT_INPUT
from sentclf_runtime.scorer import Scorer, ScorerOptions

PROBABILITIES_OUTPUT = PROBS_OUTPUT
__all__ = ["LABEL_OUTPUT", "PROBABILITIES_OUTPUT", "TEXT_INPUT", "classify", "load_classifier"]


def load_classifier(model_dir: str | None = None, max_batch_size: int = 32) -> Scorer:
    """The scorer with the same ORT settings as our server's (graph optimisation all, no spinning)."""
    options = ScorerOptions(
        max_batch_size=max_batch_size,
        intra_op_threads=int(os.environ.get("BENCH_ORT_THREADS", "0")),
        graph_optimization="all",
    )
    classifier = Scorer.from_dir(model_dir or os.environ["BENCH_MODEL_DIR"], options)
    classifier.warm_up()
    return classifier


def classify(classifier: Scorer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels (int64 [n]) and probabilities (float32 [n, labels]), the outputs our server returns."""
    probabilities = classifier.predict(texts)
    return np.argmax(probabilities, axis=1).astype(np.int64), probabilities
