"""The model's outputs: their names, types and shapes, and the raw little-endian tensors a response carries.

`label` (INT64 [n]) is the class index, `probabilities` (FP32 [n, N]) one row per sentence over the N
classes in index order, `label_name` (BYTES [n]) the class name of `label`, from serving_config.json's
`labels`. The class names in order are also in the Triton ModelConfig's `parameters["label_names"]`
(see service.py), as the JSON list the pipeline's `label_names` tags hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .codec import encode_bytes_tensor

LABEL_OUTPUT = "label"
PROBS_OUTPUT = "probabilities"
LABEL_NAME_OUTPUT = "label_name"
# The order of a response that names no outputs, and of ModelMetadata's list.
OUTPUT_NAMES = (LABEL_OUTPUT, PROBS_OUTPUT, LABEL_NAME_OUTPUT)
# The ModelConfig parameter with the class names in index order (a JSON list of strings).
LABEL_NAMES_PARAMETER = "label_names"


@dataclass(frozen=True)
class OutputTensor:
    """One output of a response: KServe v2 datatype, shape and raw (little-endian) contents."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


def output_metadata(num_labels: int) -> list[tuple[str, str, list[int]]]:
    """(name, KServe v2 datatype, shape) of every output, -1 for the batch dimension."""
    return [
        (LABEL_OUTPUT, "INT64", [-1]),
        (PROBS_OUTPUT, "FP32", [-1, num_labels]),
        (LABEL_NAME_OUTPUT, "BYTES", [-1]),
    ]


def label_names_json(labels: Sequence[str]) -> str:
    """The class names as the LABEL_NAMES_PARAMETER value (the same JSON as the pipeline's tag)."""
    return json.dumps(list(labels))


@lru_cache(maxsize=16)
def _encoded_names(labels: tuple[str, ...]) -> tuple[bytes, ...]:
    """Each class name as one element of a raw BYTES tensor (length prefix + UTF-8), made once per set."""
    return tuple(encode_bytes_tensor([name.encode("utf-8")]) for name in labels)


def encode_outputs(probs: np.ndarray, labels: Sequence[str], names: Sequence[str]) -> list[OutputTensor]:
    """The outputs `names` (in that order) for probabilities [n, len(labels)]."""
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities of shape {list(probs.shape)} for {len(labels)} classes")
    count = probs.shape[0]
    index = np.argmax(probs, axis=1) if LABEL_OUTPUT in names or LABEL_NAME_OUTPUT in names else None
    tensors = []
    for name in names:
        if name == LABEL_OUTPUT:
            tensors.append(OutputTensor(name, "INT64", (count,), index.astype("<i8").tobytes()))
        elif name == PROBS_OUTPUT:
            raw = np.ascontiguousarray(probs, dtype="<f4").tobytes()
            tensors.append(OutputTensor(name, "FP32", (count, len(labels)), raw))
        elif name == LABEL_NAME_OUTPUT:
            encoded = _encoded_names(tuple(labels))
            raw = b"".join([encoded[i] for i in index.tolist()])
            tensors.append(OutputTensor(name, "BYTES", (count,), raw))
        else:
            raise ValueError(f"unknown output {name!r}; available: {list(OUTPUT_NAMES)}")
    return tensors
