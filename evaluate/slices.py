"""Sliced metrics: the served model's scores on each slice of the test rows (a token-length bucket, a value
of a slice column such as CoLA's source or a user's `channel`), so that a team sees for which kinds of
input it is worse, not only how good it is on average.

Per slice: its rows, MCC, accuracy and macro F1 with 95% bootstrap intervals (resampled within the slice,
as stats.py resamples the whole split), and the accuracy of the slice minus that of the rest of the rows
with its interval (slice and rest resampled independently). A slice is flagged when that interval lies
below zero. The flag reads accuracy, which is defined on any slice and any label set; MCC on a slice that
holds one class only is 0 by definition and would flag every such slice. Slices with fewer than
`min_rows` rows (or whose rest has fewer) are reported, never flagged: their intervals are too wide to say
anything. With many slices some intervals exclude zero by chance (about 1 in 40 of the slices that are
not worse, at 95%): a flag is a place to look, not a verdict.

Pure functions of arrays; the step (evaluate.py) reads the columns and logs the result.
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from stats import (
    Interval,
    accuracy_per_resample,
    class_counts,
    f1_macro,
    interval,
    mcc_from_counts,
    resampled_class_counts,
)

LENGTH_DIMENSION = "length (tokens)"
LENGTH_BUCKETS = 4  # quartiles of the test rows' token counts
MIN_SLICE_ROWS = 30
MAX_VALUES = 30  # values of one column shown as slices of their own; the rarer ones are pooled
OTHER_VALUES = "(other values)"
TOO_FEW = "too few rows"


@dataclass(frozen=True)
class SliceScore:
    """The served model's scores on one slice, and how it compares with the rest of the rows."""

    dimension: str  # what the rows are sliced by: a column's name or LENGTH_DIMENSION
    value: str  # the slice: a column's value or a length range
    rows: int
    mcc: Interval
    accuracy: Interval
    f1_macro: Interval
    delta_accuracy: Interval | None  # slice minus the rest; None for a slice too small to compare
    flagged: bool  # the slice is significantly worse than the rest (delta_accuracy's interval < 0)
    note: str  # TOO_FEW, or ""

    def as_dict(self) -> dict:
        return asdict(self)


def length_buckets(token_counts: Sequence[int], buckets: int = LENGTH_BUCKETS) -> list[str]:
    """Each row's length bucket ("5-8"), the edges the quantiles of `token_counts` (ties merge buckets)."""
    counts = np.asarray(token_counts, dtype=np.int64)
    if counts.size == 0:
        return []
    quantiles = np.linspace(0, 1, buckets + 1)[1:-1]
    inner = np.unique(np.quantile(counts, quantiles, method="inverted_cdf").astype(np.int64))
    # Bucket i holds lengths in (edge[i-1], edge[i]]; the first starts at the shortest row's length.
    edges = [int(counts.min()) - 1, *[int(e) for e in inner if counts.min() <= e < counts.max()]]
    edges.append(int(counts.max()))
    names = [
        f"{low + 1}" if low + 1 == high else f"{low + 1}-{high}"
        for low, high in zip(edges, edges[1:], strict=False)
    ]
    index = np.searchsorted(np.asarray(edges[1:]), counts, side="left")
    return [names[i] for i in index]


def pooled_values(values: Sequence[str], keep: int = MAX_VALUES) -> list[str]:
    """`values` with all but the `keep` most frequent pooled into OTHER_VALUES (a user id column would
    otherwise make one slice per row)."""
    distinct, counts = np.unique(np.asarray(values, dtype=object).astype(str), return_counts=True)
    if len(distinct) <= keep:
        return [str(v) for v in values]
    kept = set(distinct[np.argsort(-counts, kind="stable")[:keep]])
    return [str(v) if str(v) in kept else OTHER_VALUES for v in values]


def _scores(labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray, classes: int):
    """(MCC, accuracy, macro F1) as intervals, and accuracy on each resample."""
    counts = class_counts(labels, predictions, classes)
    resampled = resampled_class_counts(labels, predictions, draws, classes)
    accuracy = accuracy_per_resample(labels, predictions, draws)
    return (
        interval(float(mcc_from_counts(counts)), mcc_from_counts(resampled)),
        interval(float((labels == predictions).mean()), accuracy),
        interval(float(f1_macro(counts)), f1_macro(resampled)),
        accuracy,
    )


def score_slice(
    dimension: str,
    value: str,
    member: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    classes: int,
    resamples: int,
    rng: np.random.Generator,
    min_rows: int = MIN_SLICE_ROWS,
) -> SliceScore:
    """One slice (`member`: a boolean mask over the rows) scored, and compared with the rest."""
    inside, outside = np.flatnonzero(member), np.flatnonzero(~member)
    rows = len(inside)
    draws = rng.integers(0, rows, size=(resamples, rows))
    mcc, accuracy, f1, accuracy_draws = _scores(labels[inside], predictions[inside], draws, classes)
    if rows < min_rows or len(outside) < min_rows:
        return SliceScore(dimension, value, rows, mcc, accuracy, f1, None, False, TOO_FEW)
    rest_draws = rng.integers(0, len(outside), size=(resamples, len(outside)))
    rest = accuracy_per_resample(labels[outside], predictions[outside], rest_draws)
    rest_value = float((labels[outside] == predictions[outside]).mean())
    delta = interval(accuracy.value - rest_value, accuracy_draws - rest)
    return SliceScore(dimension, value, rows, mcc, accuracy, f1, delta, delta.high < 0, "")


def slice_scores(
    labels: Sequence[int],
    predictions: Sequence[int],
    groups: Mapping[str, Sequence[str]],
    classes: int,
    resamples: int,
    seed: int,
    min_rows: int = MIN_SLICE_ROWS,
) -> list[SliceScore]:
    """Every slice of every dimension in `groups` (dimension -> each row's value), largest slices first
    within a dimension. Seeded: the same inputs give the same intervals."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    rng = np.random.default_rng(seed)
    result = []
    for dimension, row_values in groups.items():
        values = np.asarray(row_values, dtype=object)
        if len(values) != len(labels):
            raise ValueError(f"slice {dimension!r}: {len(values)} values for {len(labels)} rows")
        distinct, counts = np.unique(values.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        if dimension == LENGTH_DIMENSION:  # length ranges read best in their own order
            order = sorted(range(len(distinct)), key=lambda i: int(str(distinct[i]).split("-")[0]))
        for i in order:
            member = values.astype(str) == distinct[i]
            result.append(
                score_slice(
                    dimension,
                    str(distinct[i]),
                    member,
                    labels,
                    predictions,
                    classes,
                    resamples,
                    rng,
                    min_rows,
                )
            )
    return result


def flagged(slices: Sequence[SliceScore]) -> list[SliceScore]:
    return [s for s in slices if s.flagged]
