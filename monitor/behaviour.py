"""The model's own test-time behaviour, recomputed in this process with ONNX Runtime on its test split
(as the evaluate step scores a version offline): the class probabilities of every test sentence."""

from pathlib import Path

import numpy as np

from sentclf.text_model import TextClassifier


def test_probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Softmax probabilities [n, classes] from model.onnx + tokenizer.json + serving_config.json."""
    return TextClassifier.from_dir(model_dir).score(texts).probabilities.astype(np.float64)
