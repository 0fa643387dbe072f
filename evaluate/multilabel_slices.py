"""Sliced metrics of a multi-label version: the served decisions (at the version's thresholds) on each slice
of the test texts (a token-length bucket, a value of a slice column), so that a team sees for which kinds
of input the label sets are worse, as slices.py does for one class per text.

Per slice: its texts, micro-F1 and subset accuracy with 95% bootstrap intervals (texts resampled within the
slice), and the micro-F1 of the slice minus that of the rest with its interval (slice and rest resampled
independently). The flag rule is slices.py's, on the multi-label headline: a slice is flagged when that
interval lies below zero; slices with fewer than `min_rows` texts (or whose rest has fewer) are reported,
never flagged. With many slices some intervals exclude zero by chance: a flag is a place to look.

Micro-F1 pools (text, label) decisions, so a resample's value is a sum of per-text counts: each text's
true positives, decided labels and true labels are counted once, and a resample sums the drawn texts'
counts (no per-resample loop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sentclf.bootstrap import Interval, interval

from slices import LENGTH_DIMENSION, MIN_SLICE_ROWS, TOO_FEW


@dataclass(frozen=True)
class MultiLabelSliceScore:
    """The served label sets on one slice, and how its micro-F1 compares with the rest of the texts."""

    dimension: str
    value: str
    rows: int
    micro_f1: Interval
    subset_accuracy: Interval
    delta_micro_f1: Interval | None  # slice minus the rest; None for a slice too small to compare
    flagged: bool  # significantly worse than the rest (delta_micro_f1's interval below zero)
    note: str  # TOO_FEW, or ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _TextCounts:
    """Per text: true positives, decided labels, true labels, and whether the whole set is right."""

    tp: np.ndarray
    predicted: np.ndarray
    actual: np.ndarray
    exact: np.ndarray

    @classmethod
    def of(cls, targets: np.ndarray, decisions: np.ndarray) -> _TextCounts:
        truth, chosen = np.asarray(targets, dtype=bool), np.asarray(decisions, dtype=bool)
        if truth.shape != chosen.shape or truth.ndim != 2:
            raise ValueError(
                f"targets {truth.shape} and decisions {chosen.shape} must be one [texts, labels]"
            )
        return cls(
            (truth & chosen).sum(axis=1), chosen.sum(axis=1), truth.sum(axis=1), (truth == chosen).all(axis=1)
        )

    def take(self, rows: np.ndarray) -> _TextCounts:
        return _TextCounts(self.tp[rows], self.predicted[rows], self.actual[rows], self.exact[rows])


def _micro_f1(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """2·TP / (decided + true), summed over the last axis; 0 where a text set has neither (as sklearn's
    zero_division=0 and sentclf.multilabel_metrics)."""
    tp, denominator = tp.sum(axis=-1).astype(np.float64), (predicted + actual).sum(axis=-1).astype(np.float64)
    return np.divide(2.0 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def _scores(counts: _TextCounts, draws: np.ndarray) -> tuple[Interval, Interval, np.ndarray]:
    """Micro-F1 and subset accuracy with intervals, and micro-F1 on each resample (`draws`: [R, texts])."""
    micro = float(_micro_f1(counts.tp, counts.predicted, counts.actual))
    micro_draws = _micro_f1(counts.tp[draws], counts.predicted[draws], counts.actual[draws])
    subset = interval(float(counts.exact.mean()), counts.exact[draws].mean(axis=1))
    return interval(micro, micro_draws), subset, micro_draws


def score_slice(
    dimension: str,
    value: str,
    member: np.ndarray,
    counts: _TextCounts,
    resamples: int,
    rng: np.random.Generator,
    min_rows: int = MIN_SLICE_ROWS,
) -> MultiLabelSliceScore:
    """One slice (`member`: a boolean mask over the texts) scored, and compared with the rest."""
    inside, outside = np.flatnonzero(member), np.flatnonzero(~member)
    rows = len(inside)
    mine = counts.take(inside)
    micro, subset, micro_draws = _scores(mine, rng.integers(0, rows, size=(resamples, rows)))
    if rows < min_rows or len(outside) < min_rows:
        return MultiLabelSliceScore(dimension, value, rows, micro, subset, None, False, TOO_FEW)
    rest = counts.take(outside)
    rest_draws = rng.integers(0, len(outside), size=(resamples, len(outside)))
    rest_value = float(_micro_f1(rest.tp, rest.predicted, rest.actual))
    rest_micro = _micro_f1(rest.tp[rest_draws], rest.predicted[rest_draws], rest.actual[rest_draws])
    delta = interval(micro.value - rest_value, micro_draws - rest_micro)
    return MultiLabelSliceScore(dimension, value, rows, micro, subset, delta, delta.high < 0, "")


def multilabel_slice_scores(
    targets: np.ndarray,
    decisions: np.ndarray,
    groups: Mapping[str, Sequence[str]],
    resamples: int,
    seed: int,
    min_rows: int = MIN_SLICE_ROWS,
) -> list[MultiLabelSliceScore]:
    """Every slice of every dimension in `groups` (dimension -> each text's value), largest slices first
    within a dimension, length ranges in their own order (as slices.slice_scores). Seeded."""
    counts = _TextCounts.of(targets, decisions)
    texts = len(counts.tp)
    rng = np.random.default_rng(seed)
    result = []
    for dimension, row_values in groups.items():
        values = np.asarray(row_values, dtype=object).astype(str)
        if len(values) != texts:
            raise ValueError(f"slice {dimension!r}: {len(values)} values for {texts} texts")
        distinct, sizes = np.unique(values, return_counts=True)
        order = list(np.argsort(-sizes, kind="stable"))
        if dimension == LENGTH_DIMENSION:
            order = sorted(range(len(distinct)), key=lambda i: int(str(distinct[i]).split("-")[0]))
        for i in order:
            member = values == distinct[i]
            result.append(score_slice(dimension, str(distinct[i]), member, counts, resamples, rng, min_rows))
    return result


def card_lines(slices: Sequence[MultiLabelSliceScore]) -> list[str]:
    """The model card's lines on slices: those significantly worse than the rest (report.html has all)."""
    if not slices:
        return []
    worse = [s for s in slices if s.flagged]
    if not worse:
        return [
            f"- No slice of the test texts is significantly worse than the rest ({len(slices)} slices by "
            "length and slice column; see evaluation/report.html)."
        ]
    return ["- Significantly worse than the rest of the test texts (micro-F1, 95% interval below zero):"] + [
        f"  - {s.dimension} = `{s.value}` ({s.rows} texts): micro-F1 {s.micro_f1.value:.4f} "
        f"[{s.micro_f1.low:.4f}, {s.micro_f1.high:.4f}], Δ vs rest {s.delta_micro_f1.value:+.4f} "
        f"[{s.delta_micro_f1.low:+.4f}, {s.delta_micro_f1.high:+.4f}]"
        for s in worse
    ]


def table_html(slices: Sequence[MultiLabelSliceScore], escape) -> str:
    """report.html's slice table (every value escaped: slice values come from the user's data)."""
    if not slices:
        return ""

    def cell(value: Interval | None) -> str:
        return "-" if value is None else f"{value.value:.4f} [{value.low:.4f}, {value.high:.4f}]"

    rows = "".join(
        f"<tr><td>{escape(s.dimension)}</td><td>{escape(s.value)}</td><td>{s.rows}</td>"
        f"<td>{cell(s.micro_f1)}</td><td>{cell(s.subset_accuracy)}</td><td>{cell(s.delta_micro_f1)}</td>"
        f"<td>{'worse' if s.flagged else escape(s.note)}</td></tr>"
        for s in slices
    )
    return (
        f"<h2>Slices (95% bootstrap intervals; flagged: Δmicro-F1 vs the rest below zero; fewer than "
        f"{MIN_SLICE_ROWS} texts: not compared)</h2><table><tr><th>by</th><th>slice</th><th>texts</th>"
        "<th>micro-F1</th><th>subset accuracy</th><th>Δmicro-F1 vs rest</th><th>flag</th></tr>"
        f"{rows}</table>"
    )
