"""Several labels per text: the model's logits are one independent yes/no per label (a sigmoid head, not
a softmax over classes), and each label has its own decision threshold, tuned on validation by train and
carried in serving_config.json. The server, the pyfunc and evaluate decide with these functions, so a text
gets the same label set wherever it is scored.

A single-label config (`label_mode` absent or `single`) never reaches this module's decisions: its scores
stay the softmax and the argmax decides, as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

# serving_config.json's keys (and the schema's label_mode value) for the task kind.
LABEL_MODE_KEY = "label_mode"
THRESHOLDS_KEY = "thresholds"
SINGLE_LABEL = "single"
MULTI_LABEL = "multi"
LABEL_MODES = (SINGLE_LABEL, MULTI_LABEL)
# The threshold of a label train could not tune (no positive validation row): a plain 0.5.
DEFAULT_THRESHOLD = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic, computed in float64 without overflow and returned as float32."""
    values = logits.astype(np.float64)
    out = np.empty_like(values)
    positive = values >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-values[positive]))
    exp = np.exp(values[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out.astype(np.float32)


def decide(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Boolean [n, labels]: label j is on for a text when its probability reaches threshold j."""
    limits = np.asarray(thresholds, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(limits):
        raise ValueError(f"probabilities of shape {list(probs.shape)} for {len(limits)} thresholds")
    return probs.astype(np.float64) >= limits


def label_sets(probs: np.ndarray, labels: Sequence[str], thresholds: Sequence[float]) -> list[list[str]]:
    """Each text's decided label names, in label order (possibly none)."""
    on = decide(probs, thresholds)
    return [[labels[j] for j in np.flatnonzero(row)] for row in on]


def label_set_json(names: Sequence[str]) -> str:
    """One text's label set as the server's `label_set` element and the pyfunc's column: a JSON list."""
    return json.dumps(list(names), ensure_ascii=False)
