"""The model's inputs and outputs by name: what the ONNX graph takes and gives, and what a server request
sends and a response carries (Open Inference Protocol), so the server, its clients and the pyfunc agree.

`label` (INT64 [n]) is the class index, `probabilities` (FP32 [n, N]) one row per sentence over the N
classes in index order, `label_name` (BYTES [n]) the class name of `label`, from serving_config.json's
`labels`. The class names in order are also in the Triton ModelConfig's `parameters["label_names"]`, as the
JSON list the pipeline's `label_names` tags hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

# The ONNX graph's inputs this runtime knows how to fill from a tokenizer encoding, and its logits.
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LOGITS_OUTPUT = "logits"

# The server's one input: the sentences, BYTES [n].
TEXT_INPUT = "text"
LABEL_OUTPUT = "label"
PROBS_OUTPUT = "probabilities"
LABEL_NAME_OUTPUT = "label_name"
# The order of a response that names no outputs, and of ModelMetadata's list.
OUTPUT_NAMES = (LABEL_OUTPUT, PROBS_OUTPUT, LABEL_NAME_OUTPUT)
# A multi-label model's extra output: each text's decided label names, one JSON list per element.
LABEL_SET_OUTPUT = "label_set"
MULTI_LABEL_OUTPUT_NAMES = (*OUTPUT_NAMES, LABEL_SET_OUTPUT)
# ModelConfig parameters of a multi-label model: its label mode and per-label thresholds (JSON list).
LABEL_MODE_PARAMETER = "label_mode"
THRESHOLDS_PARAMETER = "thresholds"
# The ModelConfig parameter with the class names in index order (a JSON list of strings).
LABEL_NAMES_PARAMETER = "label_names"


def output_names(multi_label: bool = False) -> tuple[str, ...]:
    """The outputs a model answers (and a request that names none gets), in order."""
    return MULTI_LABEL_OUTPUT_NAMES if multi_label else OUTPUT_NAMES


def output_metadata(num_labels: int, multi_label: bool = False) -> list[tuple[str, str, list[int]]]:
    """(name, KServe v2 datatype, shape) of every output, -1 for the batch dimension."""
    outputs = [
        (LABEL_OUTPUT, "INT64", [-1]),
        (PROBS_OUTPUT, "FP32", [-1, num_labels]),
        (LABEL_NAME_OUTPUT, "BYTES", [-1]),
    ]
    return [*outputs, (LABEL_SET_OUTPUT, "BYTES", [-1])] if multi_label else outputs


def label_names_json(labels: Sequence[str]) -> str:
    """The class names as the LABEL_NAMES_PARAMETER value (the same JSON as the pipeline's tag)."""
    return json.dumps(list(labels))
