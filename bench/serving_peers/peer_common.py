"""What the peer servers share with the benchmark: the project's own tokenizer + ONNX Runtime code
(server/sentclf_server/model.py), so every contender runs the identical preprocessing and the
identical InferenceSession settings; only the serving stack around it differs.

Imported by name (bench/serving.py puts serving_peers/ and server on the peers' PYTHONPATH, and
loads this file in its own process for raw ORT). Configured by environment variables, set by
bench/serving.py:
  BENCH_MODEL_DIR    model.onnx, tokenizer.json, serving_config.json (extracted from the server image)
  BENCH_ORT_THREADS  ORT intra-op threads (the bench passes the core count, as it does to our server)
"""

import os

import numpy as np

# sentclf_server needs only onnxruntime, tokenizers and numpy, which every peer virtualenv has.
from sentclf_server.config import load_settings
from sentclf_server.model import SentenceClassifier

TEXT_INPUT = "text"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"


def load_classifier(model_dir: str | None = None, max_batch_size: int = 32) -> SentenceClassifier:
    """The classifier with the same ORT settings as our server's (graph optimisation all, no spinning)."""
    env = {
        "MODEL_DIR": model_dir or os.environ["BENCH_MODEL_DIR"],
        "ORT_INTRA_OP_THREADS": os.environ.get("BENCH_ORT_THREADS", "0"),
        "ORT_GRAPH_OPTIMIZATION": "all",
        "MAX_BATCH_SIZE": str(max_batch_size),
    }
    classifier = SentenceClassifier(load_settings(env))
    classifier.warm_up()
    return classifier


def classify(classifier: SentenceClassifier, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels (int64 [n]) and probabilities (float32 [n, labels]), the outputs our server returns."""
    probabilities = classifier.predict(texts)
    return np.argmax(probabilities, axis=1).astype(np.int64), probabilities
