"""Label audit of the training data: which rows' labels look wrong.

Confident learning (cleanlab's `find_label_issues`) compares each row's given label with out-of-fold
predicted probabilities: here a logistic regression over the bundled backbone's frozen sentence embeddings
(all-MiniLM-L6-v2, mean pooled, as it was trained to be used), fitted by stratified k-fold so that no row is
scored by a model that saw it. A cheap model, not the fine-tuned one: it costs one forward pass per row
and a few seconds of fitting, and a row it finds suspect is worth a person's look whatever the final model.

It runs in preprocess because that is where the data is: the step cache keys preprocess on the data's
sha256, its code and its parameters, so an unchanged data set reuses the audit with the splits, while in
evaluate it would be recomputed for every new model version on the same data.

Output: label_issues.csv, the suspect rows best first (the file and its 1-based row, the text, the given
and the suggested class by name, cleanlab's label quality score: lower is more suspect), the counts as
metrics, and its cost in seconds. Pure functions apart from `log_label_audit`.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from sentclf.contract import LABEL_AUDIT_ARTIFACT, LABEL_AUDIT_ROWS_METRIC
from sentclf.schema import LABEL_COLUMN, LabelSet

from text_pairs import model_texts
from validation import ORIGIN_COLUMN

logger = logging.getLogger(__name__)

FOLDS = 5
EMBED_BATCH = 64
EMBED_MAX_TOKENS = 128  # the backbone's trained length; a longer text is cut (its head decides)
ISSUE_COLUMNS = ("file", "row", "text", "given_label", "suggested_label", "score")


@dataclass(frozen=True)
class AuditResult:
    issues: pd.DataFrame  # ISSUE_COLUMNS, most suspect first
    rows: int  # rows audited
    seconds: float  # embedding + cross-validation + confident learning
    sampled: bool  # True when the rows were a sample (more than max_rows)


def embed(texts: list[str], batch_size: int = EMBED_BATCH) -> np.ndarray:
    """[rows, 384] mean-pooled, L2-normalised sentence embeddings of the bundled backbone, in eval mode."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from sentclf.backbone import BUNDLED_BACKBONE, resolve_backbone

    source = resolve_backbone(BUNDLED_BACKBONE)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    # Batches of similar length (by characters): each is padded to its own longest text only.
    order = np.argsort([len(text) for text in texts], kind="stable")
    ordered = [texts[i] for i in order]
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                ordered[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=EMBED_MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            chunks.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    if not chunks:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    embeddings = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
    embeddings[order] = np.concatenate(chunks)
    return embeddings


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, classes: int, seed: int, folds: int = FOLDS
) -> np.ndarray:
    """[rows, classes] probabilities, each row's from a logistic regression fitted on the other folds.
    Folds are capped by the rarest class's rows (stratification needs one of each per fold); a class a
    fold's model never saw gets probability 0 there."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    present = np.bincount(labels, minlength=classes)
    splits = max(2, min(folds, int(present[present > 0].min())))
    probabilities = np.zeros((len(labels), classes))
    for train, held in StratifiedKFold(splits, shuffle=True, random_state=seed).split(features, labels):
        model = LogisticRegression(max_iter=1000, C=1.0)
        model.fit(features[train], labels[train])
        probabilities[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
    return probabilities


def label_issues(
    frame: pd.DataFrame, probabilities: np.ndarray, label_set: LabelSet, files: pd.Series, rows: pd.Series
) -> pd.DataFrame:
    """The rows confident learning finds mislabelled, most suspect first, as ISSUE_COLUMNS."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = frame[LABEL_COLUMN].to_numpy(dtype=np.int64)
    # cleanlab wants every class of the probability matrix present among the labels: keep those present.
    present = np.flatnonzero(np.bincount(labels, minlength=label_set.size))
    remap = np.full(label_set.size, -1)
    remap[present] = np.arange(len(present))
    local = probabilities[:, present]
    local = local / np.clip(local.sum(axis=1, keepdims=True), 1e-12, None)
    given = remap[labels]
    # n_jobs=1: cleanlab would fork worker processes, which deadlock after torch has started its threads.
    ranked = find_label_issues(given, local, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(given, local)
    names = np.asarray(label_set.names, dtype=object)
    return pd.DataFrame(
        {
            "file": files.to_numpy()[ranked],
            "row": rows.to_numpy()[ranked],
            "text": model_texts(frame).to_numpy()[ranked],
            "given_label": names[labels[ranked]],
            "suggested_label": names[present[local[ranked].argmax(axis=1)]],
            "score": np.round(scores[ranked], 6),
        },
        columns=list(ISSUE_COLUMNS),
    )


def audit(
    frame: pd.DataFrame,
    label_set: LabelSet,
    seed: int,
    max_rows: int,
    files: pd.Series | None = None,
    rows: pd.Series | None = None,
    embedder=embed,
) -> AuditResult:
    """Audit `frame` (sentence, label as class index); more than `max_rows` rows: a seeded sample of them.
    `files`/`rows` name each row's file and 1-based row there (default: "" and the frame's position)."""
    started = time.perf_counter()
    frame = frame.reset_index(drop=True)
    files = pd.Series([""] * len(frame)) if files is None else files.reset_index(drop=True)
    rows = pd.Series(np.arange(1, len(frame) + 1)) if rows is None else rows.reset_index(drop=True)
    sampled = len(frame) > max_rows
    if sampled:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
        frame, files, rows = (part.iloc[keep].reset_index(drop=True) for part in (frame, files, rows))
    features = embedder(model_texts(frame).tolist())  # a pair: both texts (text_pairs.py)
    labels = frame[LABEL_COLUMN].to_numpy(dtype=np.int64)
    probabilities = out_of_fold_probabilities(features, labels, label_set.size, seed)
    issues = label_issues(frame, probabilities, label_set, files, rows)
    return AuditResult(issues, len(frame), time.perf_counter() - started, sampled)


def log_label_audit(
    pool: pd.DataFrame, label_set: LabelSet, seed: int, max_rows: int, work_dir: Path
) -> None:
    """Audit the training data (train + validation splits, as `pool`, with its file and row columns) and
    log label_issues.csv, the counts and the cost."""
    result = audit(pool, label_set, seed, max_rows, files=pool.get(ORIGIN_COLUMN), rows=pool.get("row"))
    path = work_dir / LABEL_AUDIT_ARTIFACT
    result.issues.to_csv(path, index=False)
    mlflow.log_artifact(str(path))
    mlflow.log_metrics(
        {
            "label_issues": len(result.issues),
            "label_issues_share": len(result.issues) / max(result.rows, 1),
            LABEL_AUDIT_ROWS_METRIC: result.rows,
            "label_audit_seconds": result.seconds,
        }
    )
    logger.info(
        "label audit: %d of %d rows look mislabelled%s (%.1f s); see %s",
        len(result.issues),
        result.rows,
        " (a sample)" if result.sampled else "",
        result.seconds,
        LABEL_AUDIT_ARTIFACT,
    )
