"""Drift measures shared by preprocess (a new train split against the champion's) and the monitor (served
traffic against the champion's training data and test-time behaviour): PSI over fixed bins, the
two-sample KS statistic, total variation distance."""

import numpy as np

# Token-length bins (backbone tokens, no special tokens); fixed, so PSIs of different runs compare.
LENGTH_BIN_EDGES = (0, 5, 9, 13, 17, 21, 26, 33, 41, 65, np.inf)
# Floor of a bin's share: an empty bin would make PSI infinite.
MIN_SHARE = 1e-4


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    expected = np.maximum(reference, MIN_SHARE)
    actual = np.maximum(current, MIN_SHARE)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def total_variation(reference: np.ndarray, current: np.ndarray) -> float:
    return float(0.5 * np.abs(current - reference).sum())


def ks_statistic(sample: np.ndarray, other: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    sample, other = np.sort(sample), np.sort(other)
    points = np.concatenate([sample, other])
    cdf_sample = np.searchsorted(sample, points, side="right") / sample.size
    cdf_other = np.searchsorted(other, points, side="right") / other.size
    return float(np.max(np.abs(cdf_sample - cdf_other)))


def shares(values: np.ndarray, edges) -> np.ndarray:
    """The share of `values` in each bin of `edges` (right-open bins; the last edge may be inf)."""
    counts, _ = np.histogram(values, bins=np.asarray(edges, dtype=float))
    return counts / max(counts.sum(), 1)
