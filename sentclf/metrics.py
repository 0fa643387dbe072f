"""Classification metrics computed from label arrays (numpy only, so every room can use them)."""

import math

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """Counts with true labels on rows and predictions on columns."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def matthews_corrcoef(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Binary Matthews correlation; 0.0 where it is undefined (a constant column), as GLUE reports it."""
    (tn, fp), (fn, tp) = confusion_matrix(labels, predictions, 2).astype(np.float64)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def mcc_per_resample(labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """MCC on each resample (`draws`: [resamples, rows] row indices), vectorised over the confusion counts."""
    y, p = labels[draws].astype(bool), predictions[draws].astype(bool)
    tp = (y & p).sum(axis=1).astype(float)
    tn = (~y & ~p).sum(axis=1).astype(float)
    fp = (~y & p).sum(axis=1).astype(float)
    fn = (y & ~p).sum(axis=1).astype(float)
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.divide(tp * tn - fp * fn, denominator, out=np.zeros_like(tp), where=denominator > 0)


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 2) -> dict:
    """Accuracy, MCC and precision/recall/F1 (macro, micro and per class) in one flat dict."""
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
    # Micro averages over all classes equal accuracy for single-label classification.
    accuracy = float(true_positive.sum() / total) if total else 0.0
    result = {
        "accuracy": accuracy,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_micro": accuracy,
        "recall_micro": accuracy,
        "f1_micro": accuracy,
    }
    if num_classes == 2:
        result["mcc"] = matthews_corrcoef(labels, predictions)
    for index in range(num_classes):
        result[f"precision_class_{index}"] = float(precision[index])
        result[f"recall_class_{index}"] = float(recall[index])
        result[f"f1_class_{index}"] = float(f1[index])
    return result


def percentile_ms(latencies_s: list[float], percentile: float) -> float:
    """A latency percentile in milliseconds from samples in seconds."""
    if not latencies_s:
        raise ValueError("no latency samples")
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, percentile))
