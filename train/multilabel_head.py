"""Training with several labels per text (a preprocess run with `label_mode: multi`): a sigmoid head (one
logit per label, BCE-with-logits loss: modeling.py picks it for multi-hot float targets, and the stock HF
head for `problem_type=multi_label_classification`), epochs selected on validation micro-F1 at per-label
thresholds tuned on validation, and those thresholds shipped in serving_config.json.

The thresholds are tuned where the epoch is selected, on the validation split (there is nothing else to
tune on without touching the test split); each maximises its label's F1 (sentclf.multilabel_metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import mlflow
import numpy as np
import pandas as pd

from sentclf.metrics import metric_key_names
from sentclf.multilabel_metrics import HEADLINE, best_thresholds, per_label, summary
from sentclf.schema import LabelSet
from sentclf.tracking import StepInputError
from sentclf_runtime.multilabel import sigmoid

logger = logging.getLogger(__name__)

# The selection metric of a multi-label epoch: micro-F1 once each label's threshold is tuned.
TUNED_KEY = f"{HEADLINE}_tuned"


def multi_hot(labels: pd.Series, size: int) -> np.ndarray:
    """float32 [rows, size]: 1 where the row's list of label indices holds the label."""
    matrix = np.zeros((len(labels), size), dtype=np.float32)
    for row, indices in enumerate(labels):
        matrix[row, np.asarray(indices, dtype=int)] = 1.0
    return matrix


def check_lists(frame: pd.DataFrame, column: str, split: str, label_set: LabelSet, data_run_id: str) -> None:
    """Every row a non-empty list of label indices of the run's label set."""
    for row, indices in enumerate(frame[column]):
        values = np.asarray(indices)
        if values.ndim != 1 or not len(values) or values.min() < 0 or values.max() >= label_set.size:
            raise StepInputError(
                f"split {split} of preprocess run {data_run_id}, row {row}: {indices!r} is not a non-empty "
                f"list of label indices 0..{label_set.size - 1}: rerun preprocess with label_mode=multi"
            )


def check_every_label_is_trained(targets: np.ndarray, label_set: LabelSet) -> None:
    missing = [label_set.names[j] for j in np.flatnonzero(targets.sum(axis=0) == 0)]
    if missing:
        raise StepInputError(
            f"label(s) {missing} have no training rows: raise max_train_samples (-1 = all rows) or add rows"
        )


def validation_metrics(targets: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """The summary at 0.5 (`micro_f1`, ...) and micro-F1 at thresholds tuned on these rows (TUNED_KEY)."""
    probs = sigmoid(logits)
    thresholds, _ = best_thresholds(targets, probs)
    return summary(targets, probs >= 0.5) | {TUNED_KEY: summary(targets, probs >= thresholds)[HEADLINE]}


def selection_key(validation: dict, tune_threshold: bool) -> str:
    """The validation metric an epoch is selected on: a multi-label model's tuned micro-F1, else MCC."""
    if "mcc" not in validation:
        return TUNED_KEY
    return "mcc_tuned_threshold" if tune_threshold else "mcc"


def best_key(split) -> str:
    """The summary's name for the best epoch's selection metric."""
    return f"best_val_{HEADLINE}" if split.labels.ndim == 2 else "best_val_mcc"


def log_epoch(epoch: int, train_loss: float, validation: dict) -> None:
    logger.info(
        "epoch %d: train_loss %.4f val_loss %.4f val_micro_f1 %.4f (%.4f at tuned thresholds) "
        "val_subset_acc %.4f",
        epoch,
        train_loss,
        validation["loss"],
        validation[HEADLINE],
        validation[TUNED_KEY],
        validation["subset_accuracy"],
    )


def tune_and_log(targets: np.ndarray, logits: np.ndarray, names: Sequence[str]) -> tuple[float, ...]:
    """The shipped model's per-label thresholds, tuned on validation, and its validation metrics at them
    (`val_threshold_label_<name>`, `val_micro_f1`, per-label precision/recall/F1) logged."""
    probs = sigmoid(logits)
    thresholds, _ = best_thresholds(targets, probs)
    decisions = probs >= thresholds
    metrics = {f"val_{key}": value for key, value in summary(targets, decisions).items()}
    metrics |= {f"val_{key}": value for key, value in per_label(targets, decisions, names).items()}
    keys = metric_key_names(names)
    metrics |= {f"val_threshold_label_{key}": float(t) for key, t in zip(keys, thresholds, strict=True)}
    mlflow.log_metrics(metrics)
    logger.info(
        "per-label thresholds %s: val micro-F1 %.4f",
        dict(zip(names, np.round(thresholds, 3).tolist(), strict=True)),
        metrics[f"val_{HEADLINE}"],
    )
    return tuple(float(t) for t in thresholds)
