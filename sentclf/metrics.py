"""Classification metrics computed from label arrays (numpy only, so every room can use them).

Labels and predictions are class indices 0..N-1 (the preprocess step's contract, sentclf.schema). For two
classes every function computes exactly what it computed when the project was binary-only; for N > 2 the
MCC is Gorodkin's R_K (2004), the multi-class generalisation that equals the binary MCC at N = 2.
"""

import math
import re
from collections.abc import Sequence

import numpy as np

# MLflow metric keys allow word characters, `_ - . / :` and spaces; per-class keys keep a conservative
# subset (no `/`: it makes folders in file stores; no spaces or `:`: awkward in search filters).
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAME_IN_KEY = 64


def infer_num_classes(*arrays: np.ndarray) -> int:
    """The number of classes index arrays imply: the largest index + 1, at least 2."""
    largest = max((int(np.max(a)) for a in arrays if np.size(a)), default=0)
    return max(2, largest + 1)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """Counts with true labels on rows and predictions on columns."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    if labels.size and (
        min(labels.min(), predictions.min()) < 0 or max(labels.max(), predictions.max()) >= num_classes
    ):
        raise ValueError(f"class indices outside 0..{num_classes - 1}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _binary_mcc(labels: np.ndarray, predictions: np.ndarray) -> float:
    (tn, fp), (fn, tp) = confusion_matrix(labels, predictions, 2).astype(np.float64)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def mcc_from_confusion(matrix: np.ndarray) -> float:
    """Gorodkin's R_K from an N x N confusion matrix (rows true, columns predicted); 0.0 where undefined.

    (c * s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2)), with c the correct predictions,
    s the rows, t_k the rows of class k and p_k the rows predicted k.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    correct, total = np.trace(matrix), matrix.sum()
    true_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)
    numerator = correct * total - predicted_counts @ true_counts
    denominator = math.sqrt(
        (total**2 - predicted_counts @ predicted_counts) * (total**2 - true_counts @ true_counts)
    )
    return float(numerator / denominator) if denominator else 0.0


def matthews_corrcoef(labels: np.ndarray, predictions: np.ndarray, num_classes: int | None = None) -> float:
    """Matthews correlation; 0.0 where it is undefined (a constant column), as GLUE reports it.

    Two classes (the default when the indices are 0/1): the binary formula. More: Gorodkin's R_K.
    """
    num_classes = num_classes or infer_num_classes(labels, predictions)
    if num_classes == 2:
        return _binary_mcc(labels, predictions)
    return mcc_from_confusion(confusion_matrix(labels, predictions, num_classes))


def mcc_per_resample(
    labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """MCC on each resample (`draws`: [resamples, rows] row indices), vectorised over the confusion counts.

    The class count comes from the whole arrays (not each draw), so every draw is scored the same way; a
    class absent from a draw adds nothing to R_K, so the value equals `matthews_corrcoef` of that draw.
    """
    num_classes = num_classes or infer_num_classes(labels, predictions)
    if num_classes == 2:
        y, p = labels[draws].astype(bool), predictions[draws].astype(bool)
        tp = (y & p).sum(axis=1).astype(float)
        tn = (~y & ~p).sum(axis=1).astype(float)
        fp = (~y & p).sum(axis=1).astype(float)
        fn = (y & ~p).sum(axis=1).astype(float)
        denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return np.divide(tp * tn - fp * fn, denominator, out=np.zeros_like(tp), where=denominator > 0)
    # R_K needs only the correct count and the per-class true and predicted counts of each draw:
    # [resamples, classes] arrays, not [resamples, classes, classes] (200 classes x 2000 draws is 80M cells).
    y = np.asarray(labels, dtype=np.int64)[draws]
    p = np.asarray(predictions, dtype=np.int64)[draws]
    resamples, rows = draws.shape
    offsets = (np.arange(resamples, dtype=np.int64) * num_classes)[:, None]
    size = resamples * num_classes
    true_counts = np.bincount((y + offsets).ravel(), minlength=size).reshape(resamples, num_classes)
    predicted_counts = np.bincount((p + offsets).ravel(), minlength=size).reshape(resamples, num_classes)
    true_counts, predicted_counts = true_counts.astype(np.float64), predicted_counts.astype(np.float64)
    correct = (y == p).sum(axis=1).astype(np.float64)
    total = float(rows)
    numerator = correct * total - (predicted_counts * true_counts).sum(axis=1)
    denominator = np.sqrt(
        (total**2 - (predicted_counts**2).sum(axis=1)) * (total**2 - (true_counts**2).sum(axis=1))
    )
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def metric_key_names(names: Sequence[str]) -> list[str]:
    """Class names as parts of MLflow metric keys: unsafe characters become `_`, long names are cut, and
    names that would collide after that (or end up empty) get their class index appended: keys stay unique
    and each is still recognisable."""
    cleaned = [_UNSAFE_KEY_CHARS.sub("_", str(name)).strip("_")[:MAX_NAME_IN_KEY] for name in names]
    counts: dict[str, int] = {}
    for name in cleaned:
        counts[name] = counts.get(name, 0) + 1
    keys: list[str] = []
    used: set[str] = set()
    for index, name in enumerate(cleaned):
        key = name if name and counts[name] == 1 else f"{name}_{index}".lstrip("_")
        while key in used:
            key = f"{key}_{index}"
        used.add(key)
        keys.append(key)
    return keys


def classification_metrics(
    labels: np.ndarray,
    predictions: np.ndarray,
    num_classes: int = 2,
    class_names: Sequence[str] | None = None,
    per_class: bool = True,
) -> dict:
    """Accuracy, MCC, precision/recall/F1 (macro, weighted, micro) and, with `per_class`, each class's
    precision/recall/F1/support, in one flat dict.

    Per-class keys are `precision_class_<name>` with `class_names` (sanitised by `metric_key_names`), else
    `precision_class_<index>`; the `class_` infix keeps a class called `macro` from meeting `f1_macro`.
    """
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    matrix = confusion_matrix(labels, predictions, num_classes).astype(np.float64)
    total = matrix.sum()
    true_positive = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    f1_denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, f1_denominator, out=np.zeros_like(precision), where=f1_denominator > 0
    )
    weights = actual / total if total else np.zeros_like(actual)
    # Micro averages over all classes equal accuracy for single-label classification.
    accuracy = float(true_positive.sum() / total) if total else 0.0
    result = {
        "accuracy": accuracy,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": float(precision @ weights),
        "recall_weighted": float(recall @ weights),
        "f1_weighted": float(f1 @ weights),
        "precision_micro": accuracy,
        "recall_micro": accuracy,
        "f1_micro": accuracy,
        "mcc": matthews_corrcoef(labels, predictions, num_classes),
    }
    if per_class:
        keys = (
            metric_key_names(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        for index, key in enumerate(keys):
            result[f"precision_class_{key}"] = float(precision[index])
            result[f"recall_class_{key}"] = float(recall[index])
            result[f"f1_class_{key}"] = float(f1[index])
            result[f"support_class_{key}"] = int(actual[index])
    return result


def percentile_ms(latencies_s: list[float], percentile: float) -> float:
    """A latency percentile in milliseconds from samples in seconds."""
    if not latencies_s:
        raise ValueError("no latency samples")
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, percentile))
