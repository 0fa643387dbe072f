"""Faster ONNX variants of the exported model: ONNX Runtime's transformer graph optimisation, and int8
quantisation, static (calibrated on training rows) and dynamic (int8.py, which also decides whether int8
may be served). Each is compared with PyTorch's logits and with the fp32 export's validation scores, so
the cost of a variant is on record before anyone serves it; where int8 is built, each one's speed on this
CPU too (which int8 model is fastest depends on the CPU)."""

import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.transformers import optimizer
from transformers import PretrainedConfig

from sentclf.metrics import classification_metrics
from sentclf.multilabel_metrics import summary as multilabel_summary
from sentclf_runtime.multilabel import sigmoid

from export import INPUT_NAMES, OUTPUT_NAME
from int8 import CANDIDATES, DYNAMIC, TrainingRows, quantize_dynamic_int8, quantize_int8
from training import EncodedSplit, collate, sequential_batches

logger = logging.getLogger(__name__)

VARIANTS = ("fp32", "optimized", "int8")  # what serve_variant may ask for
SPEED_ROWS = 256  # validation rows each variant's speed is measured on (int8 runs)


def build_variants(
    fp32_path: Path, config: PretrainedConfig, out_dir: Path, calibration: TrainingRows | None
) -> dict[str, Path]:
    """fp32 (as exported), optimized (fused attention/LayerNorm/GELU), and with calibration rows the int8
    models the rule may serve (int8.py's CANDIDATES). They are built only when int8 may be served
    (serve_variant=int8): calibration costs 5-40 s a model, which every nightly run and every test
    pipeline would otherwise pay."""
    optimized_path = out_dir / "model.optimized.onnx"
    optimized = optimizer.optimize_model(
        str(fp32_path),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,
    )
    optimized.save_model_to_file(str(optimized_path))
    variants = {"fp32": fp32_path, "optimized": optimized_path}
    if calibration is not None:
        for name, ffn_outputs in CANDIDATES.items():
            out = out_dir / f"model.{name}.onnx"
            if name == DYNAMIC:
                variants[name] = quantize_dynamic_int8(fp32_path, out)
            else:
                variants[name], _ = quantize_int8(fp32_path, out, calibration, ffn_outputs)
    return variants


def onnx_logits(
    path: Path, split: EncodedSplit, pad_id: int, batch_size: int = 64, session=None
) -> np.ndarray:
    """Logits of an ONNX model for every row of `split`, in input order."""
    session = session or ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lengths = np.array([len(s) for s in split.input_ids])
    logits = None
    for indices in sequential_batches(lengths, batch_size):
        batch = collate(split, indices, pad_id)
        output = session.run([OUTPUT_NAME], {name: batch[name].numpy() for name in INPUT_NAMES})[0]
        if logits is None:  # one column per class, as many as the model's head has
            logits = np.zeros((len(split), output.shape[1]), dtype=np.float32)
        logits[indices] = output
    return logits


def sentences_per_s(path: Path, split: EncodedSplit, pad_id: int, rows: int = SPEED_ROWS) -> float:
    """The model's speed on this CPU: its first `rows` rows in length-sorted batches of 32, after one
    warm-up pass, best of two passes."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    segments = None if split.token_type_ids is None else split.token_type_ids[:rows]  # sentence pairs
    head = EncodedSplit(split.input_ids[:rows], split.labels[:rows], split.texts[:rows], segments)
    best = float("inf")
    for attempt in range(3):
        started = time.perf_counter()
        onnx_logits(path, head, pad_id, batch_size=32, session=session)
        if attempt:  # the first pass warms ORT up
            best = min(best, time.perf_counter() - started)
    return len(head) / best


def compare_variants(
    paths: dict[str, Path], split: EncodedSplit, torch_logits: np.ndarray, pad_id: int
) -> dict[str, float]:
    """Size, max |logit difference| to PyTorch, label agreement and validation deltas to fp32, flat; with
    int8 models among them, every variant's sentences/s here."""
    report: dict[str, float] = {}
    timed = any(name in CANDIDATES for name in paths)
    reference = None
    for name, path in paths.items():
        logits = onnx_logits(path, split, pad_id)
        # Several labels per text: subset accuracy and micro-F1 at 0.5 stand in for accuracy and MCC (the
        # `_val_mcc_delta` key then holds the micro-F1 delta; the keys stay one set for every model).
        if split.labels.ndim == 2:
            multi = multilabel_summary(split.labels, sigmoid(logits) >= 0.5)
            scores = {"accuracy": multi["subset_accuracy"], "mcc": multi["micro_f1"]}
        else:
            scores = classification_metrics(
                split.labels, logits.argmax(axis=1), logits.shape[1], per_class=False
            )
        if reference is None:
            reference = scores
        report |= {
            f"variant_{name}_size_mb": path.stat().st_size / 1e6,
            f"variant_{name}_max_abs_diff": float(np.abs(logits - torch_logits).max()),
            f"variant_{name}_label_agreement": float((logits.argmax(1) == torch_logits.argmax(1)).mean()),
            f"variant_{name}_val_accuracy_delta": scores["accuracy"] - reference["accuracy"],
            f"variant_{name}_val_mcc_delta": scores["mcc"] - reference["mcc"],
        }
        if timed:
            report[f"variant_{name}_sentences_per_s"] = sentences_per_s(path, split, pad_id)
        logger.info(
            "variant %s: %.1f MB, max |diff| %.2e, val MCC %+.4f vs fp32%s",
            name,
            report[f"variant_{name}_size_mb"],
            report[f"variant_{name}_max_abs_diff"],
            report[f"variant_{name}_val_mcc_delta"],
            f", {report[f'variant_{name}_sentences_per_s']:.0f} sentences/s" if timed else "",
        )
    return report
