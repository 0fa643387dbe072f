"""A registered version scored in this process with ONNX Runtime, independently of any server.

Two uses: the reference the served answers must match (parity: the image serves the model that was
registered, tokenised the same way), and the current champion's answers on this run's test rows, so the
gate compares both models on the same data instead of trusting a number recorded on another split.
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

BATCH = 64
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Scores:
    labels: np.ndarray  # int64 [n]
    probabilities: np.ndarray  # float32 [n, classes]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def score_files(model_dir: Path, texts: list[str]) -> Scores:
    """Scores from model.onnx + tokenizer.json + serving_config.json in `model_dir` (the train step's
    extra files), truncating and padding as serving_config.json says."""
    config = json.loads((model_dir / "serving_config.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=int(config["max_seq_length"]))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0, length=None)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    logits = []
    for start in range(0, len(texts), BATCH):
        encodings = tokenizer.encode_batch(texts[start : start + BATCH])
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feeds = {name: np.asarray(columns[name], dtype=np.int64) for name in wanted if name in KNOWN_INPUTS}
        logits.append(session.run(None, feeds)[0])
    probabilities = softmax(np.concatenate(logits))
    return Scores(probabilities.argmax(axis=1).astype(np.int64), probabilities)


def score_version(model_name: str, version: str, texts: list[str]) -> Scores:
    """Download a registered version's ONNX model and tokenizer and score `texts` in process."""
    with tempfile.TemporaryDirectory(prefix="sentclf-offline-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=tmp)
        )
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        for target, relative in (
            ("model.onnx", "model.onnx"),
            ("tokenizer.json", "extra_files/tokenizer.json"),
            ("serving_config.json", "extra_files/serving_config.json"),
        ):
            (model_dir / target).symlink_to(local / relative)
        return score_files(model_dir, texts)
