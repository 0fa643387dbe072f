"""Each version judged on live traffic: the server's capture records joined with the labels that came back.

The capture (sentclf.traffic) says which version answered each sentence of each request (`id`, `index`,
`version`, `served`, `route`); the feedback (sentclf.feedback) gives the true class of some of them. Joined
by (request id, sentence index), per version: live accuracy, MCC and macro-F1 with 95% bootstrap intervals
on its labelled sentences, and how many sentences, requests and labels it saw. Where two versions answered
the same sentences (shadow traffic: the champion's answer returned, the challenger's captured), their
agreement, and on those that are labelled the paired bootstrap of the challenger's ΔMCC that the evaluate
step's gate uses (sentclf.bootstrap). The live promotion rule (`decide_live`) holds that comparison to the
gate's own checks and to a minimum of labelled sentences.

The monitor room (report, metrics on each version's model) and ops.promote_live (the alias) both use this.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sentclf.bootstrap import (
    Interval,
    PairedComparison,
    accuracy_per_resample,
    class_counts,
    f1_macro,
    interval,
    mcc,
    resampled_class_counts,
    resampled_mcc,
)
from sentclf.contract import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    MODEL_FIELD,
    PREDICTED_FIELD,
    REQUEST_ID_FIELD,
    ROUTE_FIELD,
    SENTENCE_INDEX_FIELD,
    SERVED_FIELD,
    SHADOW_ROUTE,
    VERSION_FIELD,
)
from sentclf.feedback import OTHER_MODEL, Feedback

logger = logging.getLogger(__name__)

UNKNOWN_ID = "unknown_id"  # a label whose request id no captured record of any model has
OUTSIDE_WINDOW = "outside_window"  # a label for a request of this model captured before the window
RESAMPLES = 1000
# Row indices drawn at once ([resamples, rows] int64): 20M cells, 160 MB, whatever the number of labels.
MAX_DRAW_CELLS = 20_000_000


@dataclass(frozen=True)
class VersionFigures:
    version: str
    sentences: int  # captured records (one per sentence), served or shadow
    requests: int  # distinct request ids (a record without an id counts as one)
    served: int  # sentences whose answer went back to the caller
    shadow: int  # sentences answered off the request path, never returned
    labelled: int
    accuracy: Interval | None = None
    mcc: Interval | None = None
    f1_macro: Interval | None = None

    def metrics(self) -> dict[str, float]:
        out = {
            "live_sentences": float(self.sentences),
            "live_requests": float(self.requests),
            "live_served": float(self.served),
            "live_shadow": float(self.shadow),
            "live_labels": float(self.labelled),
        }
        for name, value in (("accuracy", self.accuracy), ("mcc", self.mcc), ("f1_macro", self.f1_macro)):
            if value is not None:
                out |= {
                    f"live_{name}": value.value,
                    f"live_{name}_low": value.low,
                    f"live_{name}_high": value.high,
                }
        return out

    def line(self) -> str:
        seen = (
            f"v{self.version}: {self.requests} requests ({self.served} sentences served, "
            f"{self.shadow} in shadow)"
        )
        if self.mcc is None:
            return f"{seen}, no labels"
        return (
            f"{seen}, {self.labelled} labelled: MCC {self.mcc}, accuracy {self.accuracy}, "
            f"macro-F1 {self.f1_macro}"
        )


@dataclass(frozen=True)
class PairFigures:
    """A challenger against the champion on the sentences both answered (ids and positions equal)."""

    champion: str
    challenger: str
    both: int
    agreement: float | None
    labelled: int
    champion_mcc: float | None = None
    challenger_mcc: float | None = None
    comparison: PairedComparison | None = None

    def metrics(self) -> dict[str, float]:
        out = {"live_paired_sentences": float(self.both), "live_paired_labels": float(self.labelled)}
        if self.agreement is not None:
            out["live_agreement"] = self.agreement
        if self.comparison is not None:
            delta = self.comparison.delta_mcc
            out |= {
                "live_delta_mcc": delta.value,
                "live_delta_mcc_low": delta.low,
                "live_delta_mcc_high": delta.high,
                "live_share_better": self.comparison.share_better,
            }
        return out

    def line(self) -> str:
        head = f"v{self.challenger} against v{self.champion}: {self.both} sentences both answered"
        if self.agreement is None:
            return head
        head += f", agreement {self.agreement:.1%}, {self.labelled} of them labelled"
        if self.comparison is None:
            return head
        return (
            f"{head}: ΔMCC {self.comparison.delta_mcc} (v{self.challenger} better in "
            f"{self.comparison.share_better:.1%} of {self.comparison.resamples} paired resamples)"
        )


@dataclass
class LiveEvidence:
    model: str  # the registered model's name
    served_names: tuple[str, ...]  # the names its servers answer to (the capture's `model`)
    feedback: Feedback
    versions: dict[str, VersionFigures] = field(default_factory=dict)
    pairs: list[PairFigures] = field(default_factory=list)
    joined: Counter = field(default_factory=Counter)  # used, unknown_id, other_model, outside_window
    without_id: int = 0  # records with no request id (captured before ids were recorded): no labels
    repeated: int = 0  # records of the same version, request id and position seen again (dropped)

    def pair(self, champion: str, challenger: str) -> PairFigures | None:
        return next((p for p in self.pairs if (p.champion, p.challenger) == (champion, challenger)), None)

    def notes(self) -> list[str]:
        """What a person should know about the evidence itself: refused and unmatched labels."""
        notes = [self.feedback.summary()]
        if empty := self.feedback.empty_message:
            notes.append(empty)
        matched = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(self.joined.items()))
        if matched:
            notes.append(f"labels against the capture: {matched}")
        if self.without_id:
            notes.append(f"{self.without_id} captured records carry no request id (older server): no labels")
        if self.repeated:
            notes.append(f"{self.repeated} captured records repeat a request id and position: dropped")
        return notes

    def lines(self) -> list[str]:
        return [f.line() for f in self.versions.values()] + [p.line() for p in self.pairs]

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "served_names": list(self.served_names),
            "versions": {v: f.metrics() for v, f in self.versions.items()},
            "pairs": [
                {CHAMPION_ALIAS: p.champion, CHALLENGER_ALIAS: p.challenger} | p.metrics() for p in self.pairs
            ],
            "feedback": {
                "labels": len(self.feedback.labels),
                "rows": self.feedback.rows,
                "files": self.feedback.files,
                "refused": dict(self.feedback.refused),
                "problems": list(self.feedback.problems),
            },
            "joined": dict(self.joined),
            "records_without_id": self.without_id,
        }


# -- the join ----------------------------------------------------------------------------------------------


def _keys(frame: pd.DataFrame) -> pd.Series:
    """(request id, sentence index) per record; None where the record has no id."""
    if frame.empty or REQUEST_ID_FIELD not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    ids = frame[REQUEST_ID_FIELD]
    positions = (
        frame[SENTENCE_INDEX_FIELD] if SENTENCE_INDEX_FIELD in frame else pd.Series(0, index=frame.index)
    )
    keys = [
        (_id_text(i), int(p) if pd.notna(p) else 0) if pd.notna(i) and str(i) != "" else None
        for i, p in zip(ids, positions, strict=True)
    ]
    return pd.Series(keys, index=frame.index, dtype=object)


def _id_text(value: object) -> str:
    """A request id as the feedback files spell it (a number read as 7.0 next to missing ids is `7`)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def live_evidence(
    window: pd.DataFrame,
    feedback: Feedback,
    model: str,
    served_names: Iterable[str],
    num_classes: int,
    champion: str | None = None,
    challenger: str | None = None,
    before_window: pd.DataFrame | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> LiveEvidence:
    """Per-version figures and the champion/challenger pair on `window` (read_capture's frame) with the
    labels of `feedback`. The pair is the registry's champion and challenger when both answered in the
    window, else the versions the routes name (`champion` against `shadow`/`challenger`)."""
    names = tuple(sorted(set(served_names)))
    evidence = LiveEvidence(model, names, feedback)
    if window.empty:
        _match_labels(evidence, set(), set(), set())
        return evidence
    ours = (
        window[window[MODEL_FIELD].astype(str).isin(names)].copy() if MODEL_FIELD in window else window.copy()
    )
    others = window[~window.index.isin(ours.index)]
    if ours.empty:
        _match_labels(evidence, set(), set(_keys(others).dropna()), set())
        return evidence
    ours["_key"] = _keys(ours)
    ours[VERSION_FIELD] = ours[VERSION_FIELD].astype(str)
    evidence.without_id = int(ours["_key"].isna().sum())
    keyed = ours[ours["_key"].notna()]
    repeated = keyed.duplicated(subset=[VERSION_FIELD, "_key"], keep="first")
    evidence.repeated = int(repeated.sum())
    ours = ours.drop(index=keyed.index[repeated])
    earlier = set()
    if before_window is not None and not before_window.empty and MODEL_FIELD in before_window:
        earlier = set(_keys(before_window[before_window[MODEL_FIELD].astype(str).isin(names)]).dropna())
    _match_labels(evidence, set(ours["_key"].dropna()), set(_keys(others).dropna()), earlier)
    labels = feedback.labels
    ours["_true"] = [labels[k].label if k is not None and k in labels else -1 for k in ours["_key"]]
    classes = max(num_classes, int(ours[PREDICTED_FIELD].max()) + 1)
    for version in sorted(ours[VERSION_FIELD].unique(), key=_version_order):
        evidence.versions[version] = _version_figures(
            version, ours[ours[VERSION_FIELD] == version], classes, resamples, seed
        )
    for pair in _pairs(ours, champion, challenger):
        evidence.pairs.append(_pair_figures(ours, *pair, classes, resamples, seed))
    return evidence


def _match_labels(evidence: LiveEvidence, ours: set, others: set, earlier: set) -> None:
    for key, label in evidence.feedback.labels.items():
        if key in ours:
            evidence.joined["used"] += 1
        elif key in earlier:
            evidence.joined[OUTSIDE_WINDOW] += 1
        elif key in others:
            evidence.joined[OTHER_MODEL] += 1
            evidence.feedback.refuse(
                OTHER_MODEL,
                f"{label.where}: request {label.id!r} was answered by another model, not "
                f"{' / '.join(evidence.served_names)}; refused",
            )
        else:
            evidence.joined[UNKNOWN_ID] += 1
            evidence.feedback.refuse(
                UNKNOWN_ID, f"{label.where}: no captured request has id {label.id!r} (sentence {label.index})"
            )


def _version_order(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _flag(records: pd.DataFrame, column: str, default) -> pd.Series:
    if column not in records:
        return pd.Series(default, index=records.index)
    return records[column].where(records[column].notna(), default)


def _version_figures(
    version: str, records: pd.DataFrame, classes: int, resamples: int, seed: int
) -> VersionFigures:
    served = _flag(records, SERVED_FIELD, True).astype(bool)
    keys = records["_key"].dropna()
    requests = len({key[0] for key in keys}) + int(records["_key"].isna().sum())
    labelled = records[records["_true"] >= 0]
    figures = VersionFigures(
        version, len(records), requests, int(served.sum()), int((~served).sum()), len(labelled)
    )
    if labelled.empty:
        return figures
    y = labelled["_true"].to_numpy(dtype=np.int64)
    p = labelled[PREDICTED_FIELD].to_numpy(dtype=np.int64)
    accuracy, mccs, f1s = [], [], []
    for draws in _draws(len(y), resamples, seed):
        accuracy.append(accuracy_per_resample(y, p, draws))
        mccs.append(resampled_mcc(y, p, draws, classes))
        f1s.append(f1_macro(resampled_class_counts(y, p, draws, classes)))
    return VersionFigures(
        figures.version,
        figures.sentences,
        figures.requests,
        figures.served,
        figures.shadow,
        figures.labelled,
        interval(float((y == p).mean()), np.concatenate(accuracy)),
        interval(mcc(y, p, classes), np.concatenate(mccs)),
        interval(float(f1_macro(class_counts(y, p, classes))), np.concatenate(f1s)),
    )


def _draws(rows: int, resamples: int, seed: int):
    """[resamples, rows] row indices with replacement, in chunks of at most MAX_DRAW_CELLS cells; one
    chunk (the common case) is exactly sentclf.bootstrap.resample_indices(rows, resamples, seed)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_DRAW_CELLS // max(rows, 1))
    for start in range(0, resamples, chunk):
        yield rng.integers(0, rows, size=(min(chunk, resamples - start), rows))


def _pairs(ours: pd.DataFrame, champion: str | None, challenger: str | None) -> list[tuple[str, str]]:
    present = set(ours[VERSION_FIELD])
    if champion in present and challenger in present and champion != challenger:
        return [(champion, challenger)]
    if ROUTE_FIELD not in ours:
        return []
    routes = ours[ROUTE_FIELD].astype(str)
    served_by = ours.loc[routes == CHAMPION_ALIAS, VERSION_FIELD]
    if served_by.empty:
        return []
    first = str(served_by.mode().iloc[0])
    others = ours.loc[routes.isin([SHADOW_ROUTE, CHALLENGER_ALIAS]), VERSION_FIELD]
    return [(first, str(v)) for v in sorted(set(others) - {first}, key=_version_order)]


def _pair_figures(
    ours: pd.DataFrame, champion: str, challenger: str, classes: int, resamples: int, seed: int
) -> PairFigures:
    keyed = ours[ours["_key"].notna()]
    a = keyed[keyed[VERSION_FIELD] == champion].set_index("_key")
    b = keyed[keyed[VERSION_FIELD] == challenger].set_index("_key")
    theirs = b[[PREDICTED_FIELD]].rename(columns={PREDICTED_FIELD: f"{PREDICTED_FIELD}_challenger"})
    both = a[[PREDICTED_FIELD, "_true"]].join(theirs, how="inner")
    if both.empty:
        return PairFigures(champion, challenger, 0, None, 0)
    p_champion = both[PREDICTED_FIELD].to_numpy(dtype=np.int64)
    p_challenger = both[f"{PREDICTED_FIELD}_challenger"].to_numpy(dtype=np.int64)
    agreement = float((p_champion == p_challenger).mean())
    labelled = both["_true"].to_numpy() >= 0
    figures = PairFigures(champion, challenger, len(both), agreement, int(labelled.sum()))
    if not labelled.any():
        return figures
    y = both["_true"].to_numpy(dtype=np.int64)[labelled]
    return PairFigures(
        champion,
        challenger,
        figures.both,
        agreement,
        figures.labelled,
        mcc(y, p_champion[labelled], classes),
        mcc(y, p_challenger[labelled], classes),
        paired_comparison(y, p_challenger[labelled], p_champion[labelled], classes, resamples, seed),
    )


def paired_comparison(
    labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, classes: int, resamples: int, seed: int
) -> PairedComparison:
    """sentclf.bootstrap.paired_bootstrap on the same draws, drawn in chunks so that a large number of
    labels never holds [resamples, rows] in memory at once."""
    delta_mcc, delta_accuracy = [], []
    for draws in _draws(len(labels), resamples, seed):
        delta_mcc.append(
            resampled_mcc(labels, challenger, draws, classes)
            - resampled_mcc(labels, champion, draws, classes)
        )
        delta_accuracy.append(
            accuracy_per_resample(labels, challenger, draws) - accuracy_per_resample(labels, champion, draws)
        )
    deltas = np.concatenate(delta_mcc)
    return PairedComparison(
        delta_mcc=interval(mcc(labels, challenger, classes) - mcc(labels, champion, classes), deltas),
        delta_accuracy=interval(
            float((labels == challenger).mean() - (labels == champion).mean()), np.concatenate(delta_accuracy)
        ),
        share_better=float((deltas > 0).mean()),
        resamples=len(deltas),
    )


# -- the live promotion rule -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveRule:
    """The offline gate's checks (evaluate/gate.py: floor, delta, confidence; its defaults) on the live
    paired comparison, and how many labelled sentences both versions answered it needs at least. The
    gate's latency check has no live counterpart here: the capture records no latency."""

    confidence: float = 0.9
    min_delta: float = 0.0
    min_mcc: float = 0.2
    min_labels: int = 200


@dataclass(frozen=True)
class LiveDecision:
    promote: bool
    champion: str | None
    challenger: str | None
    reasons: tuple[str, ...]
    summary: str


def decide_live(
    evidence: LiveEvidence, rule: LiveRule, champion: str | None, challenger: str | None
) -> LiveDecision:
    """Promote the challenger only when the paired live comparison passes every gate check on enough
    labelled sentences; each check, and the evidence's size, is a reason."""

    def kept(why: str, *reasons: str) -> LiveDecision:
        return LiveDecision(False, champion, challenger, (*reasons, why), f"kept: {why}")

    if challenger is None:
        return kept(f"{evidence.model} has no `challenger` version to promote")
    if champion is None:
        return kept(f"{evidence.model} has no `champion`: the evaluate step's gate names the first one")
    if champion == challenger:
        return kept(f"version {challenger} already is the champion")
    pair = evidence.pair(champion, challenger)
    labelled = pair.labelled if pair else 0
    both = pair.both if pair else 0
    size = (
        f"{labelled} labelled requests (sentences v{challenger} and v{champion} both answered in shadow "
        f"traffic and that have a label; {both} both answered)"
    )
    if pair is None or pair.comparison is None or labelled < rule.min_labels:
        return LiveDecision(
            False,
            champion,
            challenger,
            (f"evidence: {size}", *evidence.notes()),
            f"kept: {labelled} labelled requests, need {rule.min_labels}",
        )
    comparison = pair.comparison
    checks = [
        (
            "floor",
            pair.challenger_mcc >= rule.min_mcc,
            f"live MCC {pair.challenger_mcc:.4f} vs min_mcc {rule.min_mcc:.4f}",
        )
    ]
    if rule.min_delta > 0:
        checks.append(
            (
                "delta",
                pair.challenger_mcc - pair.champion_mcc >= rule.min_delta,
                f"live ΔMCC {comparison.delta_mcc} vs min_delta {rule.min_delta:.4f}",
            )
        )
    checks.append(
        (
            "confidence",
            comparison.share_better >= rule.confidence,
            f"challenger better in {comparison.share_better:.1%} of {comparison.resamples} paired resamples "
            f"vs confidence {rule.confidence:.0%} (live ΔMCC {comparison.delta_mcc})",
        )
    )
    reasons = [f"evidence: {size}, need {rule.min_labels}"] + [
        f"{name} {'passed' if passed else 'failed'}: {detail}" for name, passed, detail in checks
    ]
    promote = all(passed for _, passed, _ in checks)
    against = f"v{challenger} against champion v{champion} on {labelled} labelled live requests"
    failed = [r for r in reasons[1:] if " failed: " in r]
    summary = (
        f"promoted ({against}; every check passed)" if promote else f"kept ({against}; {'; '.join(failed)})"
    )
    return LiveDecision(promote, champion, challenger, tuple(reasons), summary)


def label_names_of(tags: dict[str, str], fallback: Sequence[str]) -> list[str]:
    """A version's class names from its `label_names` tag (JSON), else `fallback`."""
    import json

    from sentclf.schema import LABEL_NAMES_TAG

    try:
        names = json.loads(tags.get(LABEL_NAMES_TAG) or "null")
    except ValueError:
        names = None
    return [str(n) for n in names] if isinstance(names, list) and names else list(fallback)


# -- the registry side -------------------------------------------------------------------------------------


def alias_version(name: str, alias: str) -> str | None:
    """The version `alias` points to, or None."""
    import mlflow

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def served_names(name: str, versions: Iterable[str]) -> set[str]:
    """The names the registered model's servers answer to, as the capture's `model` says: the served-name
    rule, the name building recorded on each version, and the registered name itself."""
    import mlflow

    from sentclf.contract import SERVED_NAME_TAG
    from sentclf.server_images import served_model_name

    client = mlflow.MlflowClient()
    names = {name, served_model_name(name)}
    for version in versions:
        try:
            recorded = client.get_model_version(name, version).tags.get(SERVED_NAME_TAG)
        except mlflow.exceptions.MlflowException:
            continue
        if recorded:
            names.add(recorded)
    return names


def run_metrics(evidence: LiveEvidence) -> dict[str, float]:
    """Every figure as one run's metrics: `live_v<version>_<figure>`, `live_v<b>_vs_v<a>_<figure>`."""
    out = {}
    for version, figures in evidence.versions.items():
        out |= {f"live_v{version}_{k.removeprefix('live_')}": v for k, v in figures.metrics().items()}
    for pair in evidence.pairs:
        prefix = f"live_v{pair.challenger}_vs_v{pair.champion}_"
        out |= {prefix + k.removeprefix("live_"): v for k, v in pair.metrics().items()}
    out["live_feedback_labels"] = float(len(evidence.feedback.labels))
    out["live_feedback_refused"] = float(sum(evidence.feedback.refused.values()))
    return {k: v for k, v in out.items() if np.isfinite(v)}


def log_on_models(evidence: LiveEvidence) -> list[str]:
    """Each version's live figures on its own MLflow 3 model (the version's model id), as the evaluate step
    logs its test figures there; a pair's on the challenger's model. Needs an active run. Returns the
    versions whose model got them."""
    import mlflow

    from sentclf.tracking import version_model_id

    logged = []
    pair_metrics = {p.challenger: p.metrics() for p in evidence.pairs}
    for version, figures in evidence.versions.items():
        try:
            model_id = version_model_id(evidence.model, version)
        except mlflow.exceptions.MlflowException:
            model_id = None
        if not model_id:
            logger.warning(
                "%s version %s has no logged model here: its live figures stay on the run",
                evidence.model,
                version,
            )
            continue
        metrics = figures.metrics() | pair_metrics.get(version, {})
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)}, model_id=model_id)
        logged.append(version)
    return logged
