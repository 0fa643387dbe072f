"""Paired bootstrap: how sure can a gate be that a challenger beats the champion on the same rows?

Shared by the evaluate step's gate (the test rows) and the live loop (sentclf.live: the labelled requests
both versions answered), so that both judge with the same maths.

On CoLA's 527 test rows the standard error of MCC is about 0.04, and the default recipe's test MCC moves
0.35-0.38 from seed to seed, so comparing two point estimates promotes by chance. Both models are scored
on the same rows; each resample draws rows with replacement and scores both models on the same draw, so
the noise they share (which rows are hard) cancels and only their difference is left.

Any number of classes: MCC is the multi-class (Gorodkin's R_K) correlation, equal to the binary MCC for
two classes, where the binary formulas of sentclf.metrics are used so CoLA's figures stay bit for bit.
MCC and F1 read only the confusion matrix's margins and diagonal, so each resample's counts are
`np.bincount`s of resamples x classes (the full N x N per resample would be 640 MB at 2000 x 200²).
"""

from dataclasses import dataclass

import numpy as np

from sentclf.metrics import matthews_corrcoef, mcc_per_resample


@dataclass(frozen=True)
class Interval:
    value: float  # on all rows
    low: float  # 2.5th percentile of the resamples
    high: float  # 97.5th percentile

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class PairedComparison:
    """Challenger minus champion, on the same resampled rows."""

    delta_mcc: Interval
    delta_accuracy: Interval
    share_better: float  # share of resamples in which the challenger's MCC is strictly higher
    resamples: int


@dataclass(frozen=True)
class ClassCounts:
    """Per-class counts on all rows (shape [classes]) or on each resample ([resamples, classes])."""

    true: np.ndarray  # rows whose label is the class (support)
    predicted: np.ndarray  # rows predicted as the class
    correct: np.ndarray  # rows of the class predicted as it (the confusion matrix's diagonal)


def resample_indices(rows: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, rows] row indices drawn with replacement, the same for every model compared."""
    return np.random.default_rng(seed).integers(0, rows, size=(resamples, rows))


def class_counts(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> ClassCounts:
    """The counts on all rows."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    return ClassCounts(
        np.bincount(labels, minlength=num_classes),
        np.bincount(predictions, minlength=num_classes),
        np.bincount(labels[labels == predictions], minlength=num_classes),
    )


def resampled_class_counts(
    labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray, num_classes: int
) -> ClassCounts:
    """The counts on each resample, vectorised: one bincount over all draws, each row's classes offset
    into a block of its own."""
    resamples = len(draws)
    offsets = (np.arange(resamples, dtype=np.int64) * num_classes)[:, None]
    y = np.asarray(labels, dtype=np.int64)[draws]
    p = np.asarray(predictions, dtype=np.int64)[draws]

    def per_resample(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        counts = np.bincount(
            (values + offsets).ravel(),
            weights=None if weights is None else weights.ravel(),
            minlength=resamples * num_classes,
        )
        return counts.astype(np.int64).reshape(resamples, num_classes)

    return ClassCounts(per_resample(y), per_resample(p), per_resample(y, y == p))


def mcc_from_counts(counts: ClassCounts) -> np.ndarray:
    """Multi-class MCC from the counts (per resample along the last axis); 0 where it is undefined (a
    constant column), as for two classes."""
    true, predicted = counts.true.astype(np.float64), counts.predicted.astype(np.float64)
    rows = true.sum(axis=-1)
    correct = counts.correct.sum(axis=-1).astype(np.float64)
    covariance = correct * rows - (true * predicted).sum(axis=-1)
    denominator = np.sqrt((rows**2 - (predicted**2).sum(axis=-1)) * (rows**2 - (true**2).sum(axis=-1)))
    return np.divide(
        covariance, denominator, out=np.zeros_like(covariance, dtype=np.float64), where=denominator > 0
    )


def precision_recall_f1(counts: ClassCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 (0 where undefined), computed as sentclf.metrics does."""
    correct = counts.correct.astype(np.float64)
    predicted, true = counts.predicted.astype(np.float64), counts.true.astype(np.float64)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, true, out=np.zeros_like(correct), where=true > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(precision), where=total > 0)
    return precision, recall, f1


def f1_macro(counts: ClassCounts) -> np.ndarray:
    """F1 averaged over every class of the label set (a class absent from rows and predictions counts 0)."""
    return precision_recall_f1(counts)[2].mean(axis=-1)


def f1_weighted(counts: ClassCounts) -> np.ndarray:
    """F1 averaged over the classes weighted by their support."""
    f1 = precision_recall_f1(counts)[2]
    return (f1 * counts.true).sum(axis=-1) / counts.true.sum(axis=-1)


def mcc(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 2) -> float:
    """MCC on all rows: binary for two classes, multi-class (R_K) beyond."""
    return matthews_corrcoef(labels, predictions, num_classes)


def resampled_mcc(
    labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray, num_classes: int = 2
) -> np.ndarray:
    """MCC on each resample (`draws`: [resamples, rows] row indices)."""
    return mcc_per_resample(labels, predictions, draws, num_classes)


def accuracy_per_resample(labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray) -> np.ndarray:
    return (labels[draws] == predictions[draws]).mean(axis=1)


def interval(value: float, samples: np.ndarray) -> Interval:
    low, high = np.percentile(samples, [2.5, 97.5])
    return Interval(float(value), float(low), float(high))


def mcc_interval(
    labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray, num_classes: int = 2
) -> Interval:
    """One model's MCC with its 95% bootstrap interval."""
    return interval(
        mcc(labels, predictions, num_classes), resampled_mcc(labels, predictions, draws, num_classes)
    )


def paired_bootstrap(
    labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, draws: np.ndarray, num_classes: int = 2
) -> PairedComparison:
    """ΔMCC and Δaccuracy (challenger - champion) with 95% intervals, and how often the challenger wins."""
    labels, challenger, champion = (np.asarray(a, dtype=np.int64) for a in (labels, challenger, champion))
    if not labels.shape == challenger.shape == champion.shape:
        raise ValueError("labels and both models' predictions must cover the same rows")
    delta_mcc = resampled_mcc(labels, challenger, draws, num_classes) - resampled_mcc(
        labels, champion, draws, num_classes
    )
    delta_accuracy = accuracy_per_resample(labels, challenger, draws) - accuracy_per_resample(
        labels, champion, draws
    )
    return PairedComparison(
        delta_mcc=interval(
            mcc(labels, challenger, num_classes) - mcc(labels, champion, num_classes), delta_mcc
        ),
        delta_accuracy=interval(
            float((labels == challenger).mean() - (labels == champion).mean()), delta_accuracy
        ),
        share_better=float((delta_mcc > 0).mean()),
        resamples=len(draws),
    )
