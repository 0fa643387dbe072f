"""The captured window against the model's training data and its test-time behaviour, feature by feature.

Each feature is a number per sentence, binned on fixed edges; its PSI (over the bins) and KS statistic
(over the raw values) against the reference are held against the threshold, as the preprocess step
holds its length PSI and KS. Predicted classes have no order: PSI (and total variation, reported) over
the class shares.
"""

from dataclasses import dataclass, field

import numpy as np

from sentclf.contract import MonitorVerdict
from sentclf.drift_math import LENGTH_BIN_EDGES, ks_statistic, psi, shares, total_variation

INF = np.inf
# feature -> (what it is, reference, bin edges)
FEATURES = {
    "chars": (
        "sentence length in characters",
        "training data",
        (0, 15, 25, 35, 45, 60, 80, 120, 200, 400, INF),
    ),
    "tokens": ("sentence length in tokens (no special tokens)", "training data", LENGTH_BIN_EDGES),
    "oov_share": (
        "share of a sentence's words the vocabulary does not hold whole",
        "training data",
        (0, 1e-9, 0.1, 0.2, 0.34, 0.5, INF),
    ),
    "confidence": (
        "the predicted class's probability",
        "test-time behaviour",
        (0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, INF),
    ),
}


@dataclass
class FeatureScore:
    name: str
    description: str
    reference_kind: str
    psi: float
    ks: float | None
    bins: list[str]
    reference: list[float]
    current: list[float]
    reference_mean: float | None = None
    current_mean: float | None = None
    extra: dict = field(default_factory=dict)

    def drifted(self, threshold: float) -> bool:
        return self.psi > threshold or (self.ks is not None and self.ks > threshold)


def _label(edge_from: float, edge_to: float) -> str:
    return f"[{edge_from:g}, {edge_to:g})" if edge_to != INF else f">= {edge_from:g}"


def numeric_score(name: str, reference: np.ndarray, current: np.ndarray) -> FeatureScore:
    description, kind, edges = FEATURES[name]
    ref_shares, cur_shares = shares(reference, edges), shares(current, edges)
    return FeatureScore(
        name,
        description,
        kind,
        psi(ref_shares, cur_shares),
        ks_statistic(current, reference),
        [_label(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)],
        ref_shares.tolist(),
        cur_shares.tolist(),
        float(np.mean(reference)),
        float(np.mean(current)),
    )


def class_score(labels: list[str], reference: np.ndarray, current: np.ndarray) -> FeatureScore:
    """Predicted-class shares: the test split's predictions against the served ones."""
    size = len(labels)
    ref_shares = np.bincount(reference, minlength=size)[:size] / max(len(reference), 1)
    cur_shares = np.bincount(current, minlength=size)[:size] / max(len(current), 1)
    return FeatureScore(
        "predicted_class",
        "share of sentences predicted as each class",
        "test-time behaviour",
        psi(ref_shares, cur_shares),
        None,
        list(labels),
        ref_shares.tolist(),
        cur_shares.tolist(),
        extra={"tvd": total_variation(ref_shares, cur_shares)},
    )


def compare(
    reference_features: dict[str, np.ndarray],
    traffic_features: dict[str, np.ndarray],
    labels: list[str],
    reference_predictions: np.ndarray,
    traffic_predictions: np.ndarray,
) -> list[FeatureScore]:
    """Every feature both sides have (a capture without token counts skips tokens and oov_share)."""
    scores = [
        numeric_score(name, reference_features[name], traffic_features[name])
        for name in FEATURES
        if name in reference_features and name in traffic_features
    ]
    scores.append(class_score(labels, reference_predictions, traffic_predictions))
    return scores


def verdict(scores: list[FeatureScore], threshold: float) -> MonitorVerdict:
    over = tuple(s.name for s in scores if s.drifted(threshold))
    return MonitorVerdict(drift=bool(over), features=over, threshold=threshold)
