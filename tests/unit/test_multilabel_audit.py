"""The label audit of multi-label data (preprocess/multilabel_audit.py, cleanlab's multi-label confident
learning over per-label out-of-fold probabilities): texts with a planted wrong label set come out near the
top of label_issues.csv, the sets written as the server's JSON lists. A stand-in embedder whose features
show each text's true labels keeps it fast (the real one is label_audit.embed, tested single-label)."""

import json

import numpy as np
import pandas as pd

from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, LabelSet

from label_audit import ISSUE_COLUMNS
from multilabel_audit import audit_multilabel, out_of_fold_probabilities

NAMES = ("billing", "login", "refund", "shipping")


def planted(rows: int = 240, wrong: int = 12, seed: int = 4):
    """(frame with label lists, features that show the true sets, positions of the wrong sets)."""
    rng = np.random.default_rng(seed)
    truth = rng.random((rows, len(NAMES))) < 0.35
    truth[~truth.any(axis=1), 0] = True
    features = truth * 2.0 + rng.normal(0, 0.4, size=truth.shape)
    given = truth.copy()
    flipped = rng.choice(rows, wrong, replace=False)
    for row in flipped:  # swap the text's labels for others: one missing and one too many at least
        given[row] = ~truth[row]
        if not given[row].any():
            given[row, 3] = True
    labels = [list(map(int, np.flatnonzero(row))) for row in given]
    frame = pd.DataFrame({TEXT_COLUMN: [f"ticket {i}" for i in range(rows)], LABEL_COLUMN: labels})
    return frame, features, flipped


def test_planted_wrong_label_sets_are_found_near_the_top():
    frame, features, flipped = planted()
    calls = []

    def embedder(texts):
        calls.append(len(texts))
        return features

    result = audit_multilabel(frame, LabelSet(NAMES, NAMES), seed=0, max_rows=10_000, embedder=embedder)
    assert calls == [240] and result.rows == 240 and not result.sampled
    issues = result.issues
    assert list(issues.columns) == list(ISSUE_COLUMNS)
    top = issues["row"].to_numpy()[: 2 * len(flipped)] - 1  # default rows: 1-based positions
    recall = np.isin(flipped, top).mean()
    assert recall >= 0.8, f"only {recall:.0%} of the planted sets among the first {len(top)} listed"
    first = issues.iloc[0]
    given, suggested = json.loads(first["given_label"]), json.loads(first["suggested_label"])
    assert set(given) <= set(NAMES) and set(suggested) <= set(NAMES) and given != suggested
    assert issues["score"].between(0, 1).all()


def test_a_label_no_fold_can_fit_gets_its_share_and_sampling_is_seeded():
    rng = np.random.default_rng(0)
    targets = np.zeros((40, 3), dtype=bool)
    targets[:, 0] = True  # every text has it: no regression can fit
    targets[::2, 1] = True
    probabilities = out_of_fold_probabilities(rng.normal(size=(40, 5)), targets, seed=0)
    assert (
        probabilities.shape == (40, 3)
        and (probabilities[:, 0] == 1).all()
        and (probabilities[:, 2] == 0).all()
    )
    frame, features, _ = planted(300)
    seen = []

    def embedder(texts):
        seen.append(list(texts))
        return features[[int(t.split()[1]) for t in texts]]

    one = audit_multilabel(frame, LabelSet(NAMES, NAMES), seed=3, max_rows=150, embedder=embedder)
    two = audit_multilabel(frame, LabelSet(NAMES, NAMES), seed=3, max_rows=150, embedder=embedder)
    assert one.sampled and one.rows == 150 and len(seen[0]) == 150 and seen[0] == seen[1]
    pd.testing.assert_frame_equal(one.issues, two.issues)
