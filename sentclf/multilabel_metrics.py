"""Metrics of several labels per text, and the per-label decision thresholds (numpy only; train tunes the
thresholds and selects epochs with these, evaluate reports them with bootstrap intervals).

`targets` and `decisions` are 0/1 (or bool) matrices [texts, labels]; `probs` the model's per-label
sigmoid probabilities. Micro F1 pools every (text, label) decision; macro F1 is the mean of the labels'
F1; subset accuracy counts texts whose whole label set is right; Hamming loss is the share of wrong
(text, label) decisions. A label with no positive and no predicted text has F1 0 in the macro mean
(scikit-learn's zero_division=0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentclf.metrics import metric_key_names
from sentclf_runtime.multilabel import DEFAULT_THRESHOLD

# The headline metric of a multi-label model (gate, epoch selection): pooled over every decision, so
# frequent labels weigh more, as a team's inbox does.
HEADLINE = "micro_f1"
SUMMARY_KEYS = ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss")


def _counts(targets: np.ndarray, decisions: np.ndarray, axis: int | None) -> tuple[np.ndarray, ...]:
    truth, chosen = np.asarray(targets, dtype=bool), np.asarray(decisions, dtype=bool)
    if truth.shape != chosen.shape or truth.ndim != 2:
        raise ValueError(f"targets {truth.shape} and decisions {chosen.shape} must be one [texts, labels]")
    tp = (truth & chosen).sum(axis=axis)
    return tp, chosen.sum(axis=axis), truth.sum(axis=axis)


def _f1(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    denominator = np.asarray(predicted + actual, dtype=np.float64)
    return np.divide(2.0 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def summary(targets: np.ndarray, decisions: np.ndarray) -> dict[str, float]:
    """micro_f1, macro_f1, subset_accuracy, hamming_loss."""
    truth, chosen = np.asarray(targets, dtype=bool), np.asarray(decisions, dtype=bool)
    micro = _f1(*_counts(truth, chosen, axis=None))
    per_label = _f1(*_counts(truth, chosen, axis=0))
    return {
        "micro_f1": float(micro),
        "macro_f1": float(per_label.mean()),
        "subset_accuracy": float((truth == chosen).all(axis=1).mean()),
        "hamming_loss": float((truth != chosen).mean()),
    }


def per_label(targets: np.ndarray, decisions: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """`precision_label_<name>`, `recall_label_<name>`, `f1_label_<name>`, `support_label_<name>`."""
    tp, predicted, actual = (np.asarray(a, dtype=np.float64) for a in _counts(targets, decisions, axis=0))
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = _f1(tp, predicted, actual)
    metrics = {}
    for j, key in enumerate(metric_key_names(names)):
        metrics |= {
            f"precision_label_{key}": float(precision[j]),
            f"recall_label_{key}": float(recall[j]),
            f"f1_label_{key}": float(f1[j]),
            f"support_label_{key}": float(actual[j]),
        }
    return metrics


def resampled_summary(targets: np.ndarray, decisions: np.ndarray, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Each SUMMARY_KEYS metric on every bootstrap resample of the texts (`draws`: [resamples, texts])."""
    truth, chosen = np.asarray(targets, dtype=bool), np.asarray(decisions, dtype=bool)
    values: dict[str, list[float]] = {key: [] for key in SUMMARY_KEYS}
    for rows in draws:
        for key, value in summary(truth[rows], chosen[rows]).items():
            values[key].append(value)
    return {key: np.asarray(series) for key, series in values.items()}


def best_thresholds(targets: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, F1 at them) per label: the threshold that maximises the label's F1 on these texts,
    half-way between two neighbouring probabilities (so a text at the edge is not decided by rounding);
    ties go to the candidate nearest DEFAULT_THRESHOLD. A label without a positive text keeps
    DEFAULT_THRESHOLD (nothing to tune on)."""
    truth, probs = np.asarray(targets, dtype=bool), np.asarray(probs, dtype=np.float64)
    thresholds = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    scores = np.zeros(probs.shape[1])
    for j in range(probs.shape[1]):
        if not truth[:, j].any():
            continue
        values = np.unique(probs[:, j])
        candidates = np.unique(np.concatenate([(values[:-1] + values[1:]) / 2, [DEFAULT_THRESHOLD]]))
        candidates = candidates[(candidates > 0) & (candidates < 1)]
        chosen = probs[:, j][None, :] >= candidates[:, None]
        tp = (chosen & truth[:, j]).sum(axis=1)
        f1 = _f1(tp, chosen.sum(axis=1), np.full(len(candidates), truth[:, j].sum()))
        best = np.flatnonzero(f1 == f1.max())
        pick = best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]
        thresholds[j], scores[j] = candidates[pick], f1[pick]
    return thresholds, scores
