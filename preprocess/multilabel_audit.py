"""Label audit of multi-label training data (`label_mode: multi`): which texts' label sets look wrong.

The single-label audit's recipe (label_audit.py), one decision per label: the bundled backbone's frozen
sentence embeddings, out-of-fold probabilities from one logistic regression per label (one-vs-rest, fitted
by k-fold so that no text is scored by a model that saw it), and cleanlab's multi-label confident learning
(`cleanlab.multilabel_classification`), which flags a text when any of its labels looks wrongly given or
wrongly missing. The output is label_audit.py's label_issues.csv with the same columns; `given_label` and
`suggested_label` are label sets written as the server's `label_set` (a JSON list of names; the
suggestion is the labels whose out-of-fold probability reaches 0.5).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from sentclf.schema import LABEL_COLUMN, LabelSet
from sentclf_runtime.multilabel import DEFAULT_THRESHOLD, label_set_json

import label_audit
from label_audit import FOLDS, ISSUE_COLUMNS, AuditResult
from text_pairs import model_texts


def multi_hot(labels: pd.Series, size: int) -> np.ndarray:
    """[texts, labels] booleans of a list<int64> label column."""
    targets = np.zeros((len(labels), size), dtype=bool)
    for row, indices in enumerate(labels):
        targets[row, np.asarray(indices, dtype=np.int64)] = True
    return targets


def out_of_fold_probabilities(
    features: np.ndarray, targets: np.ndarray, seed: int, folds: int = FOLDS
) -> np.ndarray:
    """[texts, labels] probabilities, each text's from per-label logistic regressions fitted on the other
    folds. A label that a fold's training texts all have (or all lack) gets that fold's share of it: a
    regression needs both answers to fit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    texts, labels = targets.shape
    probabilities = np.zeros((texts, labels))
    splits = max(2, min(folds, texts))
    for train, held in KFold(splits, shuffle=True, random_state=seed).split(features):
        for j in range(labels):
            answers = targets[train, j]
            if answers.all() or not answers.any():
                probabilities[held, j] = float(answers.mean())
                continue
            model = LogisticRegression(max_iter=1000, C=1.0).fit(features[train], answers)
            probabilities[held, j] = model.predict_proba(features[held])[:, 1]
    return probabilities


def multilabel_issues(
    frame: pd.DataFrame, probabilities: np.ndarray, label_set: LabelSet, files: pd.Series, rows: pd.Series
) -> pd.DataFrame:
    """The texts cleanlab's multi-label confident learning flags, most suspect first, as ISSUE_COLUMNS."""
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    given = [[int(i) for i in indices] for indices in frame[LABEL_COLUMN]]
    # cleanlab counts classes from the labels given: keep the labels present among them, in order.
    present = np.flatnonzero(multi_hot(frame[LABEL_COLUMN], label_set.size).any(axis=0))
    remap = {int(label): local for local, label in enumerate(present)}
    local_given = [[remap[i] for i in indices] for indices in given]
    local = probabilities[:, present]
    # n_jobs=1: cleanlab would fork worker processes, which deadlock after torch has started its threads.
    ranked = find_label_issues(local_given, local, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(local_given, local)
    names = label_set.names
    suggested = probabilities >= DEFAULT_THRESHOLD
    return pd.DataFrame(
        {
            "file": files.to_numpy()[ranked],
            "row": rows.to_numpy()[ranked],
            "text": model_texts(frame).to_numpy()[ranked],
            "given_label": [label_set_json([names[i] for i in given[r]]) for r in ranked],
            "suggested_label": [
                label_set_json([names[j] for j in np.flatnonzero(suggested[r])]) for r in ranked
            ],
            "score": np.round(scores[ranked], 6),
        },
        columns=list(ISSUE_COLUMNS),
    )


def audit_multilabel(
    frame: pd.DataFrame,
    label_set: LabelSet,
    seed: int,
    max_rows: int,
    files: pd.Series | None = None,
    rows: pd.Series | None = None,
    embedder=None,
) -> AuditResult:
    """label_audit.audit for label lists: `frame` (sentence, label as a list of label indices); more than
    `max_rows` texts: a seeded sample. `embedder` defaults to label_audit.embed (looked up when called)."""
    started = time.perf_counter()
    frame = frame.reset_index(drop=True)
    files = pd.Series([""] * len(frame)) if files is None else files.reset_index(drop=True)
    rows = pd.Series(np.arange(1, len(frame) + 1)) if rows is None else rows.reset_index(drop=True)
    sampled = len(frame) > max_rows
    if sampled:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
        frame, files, rows = (part.iloc[keep].reset_index(drop=True) for part in (frame, files, rows))
    features = (embedder or label_audit.embed)(model_texts(frame).tolist())
    targets = multi_hot(frame[LABEL_COLUMN], label_set.size)
    probabilities = out_of_fold_probabilities(features, targets, seed)
    issues = multilabel_issues(frame, probabilities, label_set, files, rows)
    return AuditResult(issues, len(frame), time.perf_counter() - started, sampled)
