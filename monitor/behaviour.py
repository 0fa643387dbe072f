"""The model's own test-time behaviour, recomputed in this process with ONNX Runtime on its test split
(as the evaluate step scores a version offline): the class probabilities of every test sentence."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

BATCH = 64
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def test_probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Softmax probabilities [n, classes] from model.onnx + tokenizer.json + serving_config.json."""
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
    values = np.concatenate(logits).astype(np.float64)
    exp = np.exp(values - values.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
