"""A registered version scored in this process with ONNX Runtime, independently of any server.

Two uses: the reference the served answers must match (parity: the image serves the model that was
registered, tokenised the same way), and the current champion's answers on this run's test rows, so the
gate compares both models on the same data instead of trusting a number recorded on another split.

The scorer is sentclf.text_model's (the registered pyfunc's own): either layout of a version, the pyfunc's
artifacts/ or an earlier version's onnx flavor with extra_files/, is read.
"""

import tempfile
from pathlib import Path

import mlflow

from sentclf.contract import ModelRef
from sentclf.text_model import Scores, TextClassifier, softmax

__all__ = ["Scores", "score_files", "score_version", "softmax"]


def score_files(model_dir: Path, texts: list[str]) -> Scores:
    """Scores from model.onnx + tokenizer.json + serving_config.json in `model_dir` (plain names, or a
    downloaded version in either layout), truncating and padding as serving_config.json says."""
    return TextClassifier.from_dir(model_dir).score(texts)


def score_version(model_name: str, version: str, texts: list[str]) -> Scores:
    """Download a registered version and score `texts` in process."""
    with tempfile.TemporaryDirectory(prefix="sentclf-offline-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=ModelRef(model_name, version).uri, dst_path=tmp)
        )
        return score_files(local, texts)
