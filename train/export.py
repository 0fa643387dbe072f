"""ONNX export with dynamic batch and sequence axes, and the parity gate against PyTorch."""

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import PreTrainedModel

from training import EncodedSplit, collate, sequential_batches

logger = logging.getLogger(__name__)

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT_NAME = "logits"
OPSET = 17
PARITY_MIN_SENTENCES = 256
PARITY_MAX_ABS_DIFF = 1e-4


class ParityError(RuntimeError):
    """The exported ONNX model does not reproduce PyTorch's outputs."""


def export_onnx(model: PreTrainedModel, sample: dict[str, torch.Tensor], path: Path) -> Path:
    """Export with the TorchScript-based exporter: it handles BERT with dynamic axes, needs no onnxscript."""
    model.eval()
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    with torch.inference_mode():
        torch.onnx.export(
            model,
            tuple(sample[name] for name in INPUT_NAMES),
            str(path),
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    logger.info("exported ONNX to %s (%.1f MB)", path.name, path.stat().st_size / 1e6)
    return path


def parity_report(
    model: PreTrainedModel, onnx_path: Path, split: EncodedSplit, pad_id: int, batch_size: int = 64
) -> dict[str, float]:
    """Compare logits on the first PARITY_MIN_SENTENCES rows (all when fewer) in padded batches."""
    count = min(len(split), PARITY_MIN_SENTENCES)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    lengths = np.array([len(s) for s in split.input_ids[:count]])
    max_diff, mismatched = 0.0, 0
    model.eval()
    for indices in sequential_batches(lengths, batch_size):
        batch = collate(split, indices, pad_id)
        with torch.inference_mode():
            expected = model(**{name: batch[name] for name in INPUT_NAMES}).logits.numpy()
        actual = session.run([OUTPUT_NAME], {name: batch[name].numpy() for name in INPUT_NAMES})[0]
        max_diff = max(max_diff, float(np.abs(expected - actual).max()))
        mismatched += int((expected.argmax(axis=1) != actual.argmax(axis=1)).sum())
    return {"parity_sentences": count, "parity_max_abs_diff": max_diff, "parity_label_mismatches": mismatched}


def check_parity(report: dict[str, float]) -> None:
    """Raise unless logits agree within PARITY_MAX_ABS_DIFF and every predicted label is identical."""
    if report["parity_max_abs_diff"] > PARITY_MAX_ABS_DIFF or report["parity_label_mismatches"]:
        raise ParityError(
            f"ONNX export does not match PyTorch on {report['parity_sentences']} sentences: max |logit diff| "
            f"{report['parity_max_abs_diff']:.2e} (limit {PARITY_MAX_ABS_DIFF:.0e}), "
            f"{report['parity_label_mismatches']} label mismatch(es)"
        )
    logger.info(
        "ONNX parity ok: max |diff| %.2e over %d sentences",
        report["parity_max_abs_diff"],
        report["parity_sentences"],
    )
