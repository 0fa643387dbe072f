"""Tokenizer + ONNX Runtime session for a BERT-style sequence classifier."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .config import Settings

log = logging.getLogger(__name__)

_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Inputs we know how to fill from a tokenizer Encoding.
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ModelError(RuntimeError):
    """The model files are unusable (wrong inputs/outputs, label count mismatch, ...)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, shifted by the row max for numerical stability."""
    shifted = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def load_tokenizer(path: str, max_seq_length: int) -> Tokenizer:
    """Load a HF fast tokenizer, truncating to max_seq_length and padding to the longest in a batch."""
    tokenizer = Tokenizer.from_file(path)
    tokenizer.enable_truncation(max_length=max_seq_length)
    pad_token = "[PAD]"
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        # Non-BERT vocabularies: keep whatever pad token the file configured, else id 0 (the attention
        # mask hides padding anyway, so the exact id does not change the result).
        configured = tokenizer.padding or {}
        pad_id = configured.get("pad_id", 0)
        pad_token = configured.get("pad_token", pad_token)
    # length=None means "pad to the longest sequence in this batch", overriding any fixed padding in the file.
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, length=None)
    return tokenizer


def make_session(settings: Settings) -> ort.InferenceSession:
    """Create a CPU InferenceSession configured from ORT_* settings."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _GRAPH_OPT[settings.ort_graph_optimization]
    options.intra_op_num_threads = settings.ort_intra_op_threads  # 0 = ORT picks (one per core)
    # Only one batch runs at a time (single worker thread), so inter-op parallelism buys nothing.
    options.inter_op_num_threads = 1
    # ORT's pool threads busy-wait between ops by default. Here they share the cores with the gRPC event
    # loop (and, in a pod with a CPU limit, with a quota), where spinning measured 1.3-2x slower per batch.
    spinning = "1" if settings.ort_allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return ort.InferenceSession(str(settings.model_path), options, providers=["CPUExecutionProvider"])


class SentenceClassifier:
    """Turns a list of sentences into class probabilities. Not thread-safe by design: one worker calls it."""

    def __init__(self, settings: Settings) -> None:
        self.labels = settings.labels
        self.max_batch_size = settings.max_batch_size
        self.tokenizer = load_tokenizer(str(settings.tokenizer_path), settings.max_seq_length)
        self.session = make_session(settings)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = [name for name in self.input_names if name not in _KNOWN_INPUTS]
        if unknown or "input_ids" not in self.input_names:
            raise ModelError(
                f"model inputs {self.input_names} must be input_ids plus optional {list(_KNOWN_INPUTS[1:])}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "logits" if "logits" in outputs else outputs[0]

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        # Feed only what the graph declares: exports differ (e.g. DistilBERT has no token_type_ids).
        feeds = {name: np.asarray(columns[name], dtype=np.int64) for name in self.input_names}
        (logits,) = self.session.run([self.output_name], feeds)
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            expected = f"[batch, {len(self.labels)}]"
            raise ModelError(f"model returned logits of shape {list(logits.shape)}, expected {expected}")
        return softmax(logits)

    def predict(self, texts: list[str]) -> np.ndarray:
        """Return float32 probabilities [len(texts), num_labels]; runs in chunks of max_batch_size."""
        if len(texts) <= self.max_batch_size:
            return self._run(texts)
        # A single oversized request is chunked so that padding memory stays bounded.
        step = self.max_batch_size
        chunks = [self._run(texts[i : i + step]) for i in range(0, len(texts), step)]
        return np.concatenate(chunks, axis=0)

    def warm_up(self) -> None:
        """One dummy inference: triggers ORT's lazy allocations and checks the output shape early."""
        self.predict(["warm up"])
