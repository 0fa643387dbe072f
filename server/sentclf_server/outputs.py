"""The raw little-endian tensors a response carries for the model's outputs. Their names, types and shapes
are the runtime's (`sentclf_runtime.outputs`), shared with the clients and the pyfunc."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sentclf_runtime.config import ServingConfig
from sentclf_runtime.multilabel import label_set_json, label_sets
from sentclf_runtime.outputs import (
    LABEL_MODE_PARAMETER,
    LABEL_NAME_OUTPUT,
    LABEL_NAMES_PARAMETER,
    LABEL_OUTPUT,
    LABEL_SET_OUTPUT,
    OUTPUT_NAMES,
    PROBS_OUTPUT,
    THRESHOLDS_PARAMETER,
    label_names_json,
    output_metadata,
    output_names,
)

from .codec import encode_bytes_tensor

__all__ = [
    "LABEL_NAMES_PARAMETER",
    "LABEL_NAME_OUTPUT",
    "LABEL_OUTPUT",
    "OUTPUT_NAMES",
    "PROBS_OUTPUT",
    "OutputTensor",
    "encode_outputs",
    "config_parameters",
    "served_metadata",
    "served_outputs",
    "thresholds_of",
    "label_names_json",
    "output_metadata",
]


@dataclass(frozen=True)
class OutputTensor:
    """One output of a response: KServe v2 datatype, shape and raw (little-endian) contents."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


def served_outputs(serving: ServingConfig) -> tuple[str, ...]:
    """The outputs this model answers (a multi-label one adds `label_set`)."""
    return output_names(serving.multi_label)


def served_metadata(serving: ServingConfig) -> list[tuple[str, str, list[int]]]:
    return output_metadata(len(serving.labels), serving.multi_label)


def thresholds_of(serving: ServingConfig) -> tuple[float, ...] | None:
    """A multi-label model's per-label thresholds; None for a single-label one (the argmax decides)."""
    return serving.label_thresholds() if serving.multi_label else None


def config_parameters(serving: ServingConfig) -> dict[str, str]:
    """ModelConfig's string parameters: the class names, and a multi-label model's mode and thresholds."""
    parameters = {LABEL_NAMES_PARAMETER: label_names_json(serving.labels)}
    if serving.multi_label:
        parameters[LABEL_MODE_PARAMETER] = serving.label_mode
        parameters[THRESHOLDS_PARAMETER] = json.dumps(list(serving.label_thresholds()))
    return parameters


@lru_cache(maxsize=16)
def _encoded_names(labels: tuple[str, ...]) -> tuple[bytes, ...]:
    """Each class name as one element of a raw BYTES tensor (length prefix + UTF-8), made once per set."""
    return tuple(encode_bytes_tensor([name.encode("utf-8")]) for name in labels)


def encode_outputs(
    probs: np.ndarray,
    labels: Sequence[str],
    names: Sequence[str],
    thresholds: Sequence[float] | None = None,
) -> list[OutputTensor]:
    """The outputs `names` (in that order) for probabilities [n, len(labels)]; `thresholds` (a
    multi-label model's, one per label) decide each text's `label_set`."""
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
        elif name == LABEL_SET_OUTPUT and thresholds is not None:
            sets = label_sets(probs, labels, thresholds)
            raw = encode_bytes_tensor([label_set_json(chosen).encode("utf-8") for chosen in sets])
            tensors.append(OutputTensor(name, "BYTES", (count,), raw))
        else:
            raise ValueError(f"unknown output {name!r}; available: {list(OUTPUT_NAMES)}")
    return tensors
