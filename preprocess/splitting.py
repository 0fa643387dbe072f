"""Seeded, stratified splitting: each label keeps its share in both parts."""

import numpy as np
import pandas as pd

from sentclf.schema import LABEL_COLUMN

# The overlap check's own sentence key, so that what is dropped is exactly what it would warn about.
from text_pairs import model_texts
from validation import sentence_key


def held_out_count(rows: int, fraction: float) -> int:
    """Rows of one label that stratified_split holds out (rounded half to even, as Python rounds)."""
    return int(round(rows * fraction))


def stratified_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `frame` into (rest, held_out) with `fraction` of every label in held_out, deterministically.

    Labels are the class indexes; they are taken in sorted order, so a seed draws the same rows as long
    as the rows and their indexes do (CoLA's 0/1 values are its indexes)."""
    rng = np.random.default_rng(seed)
    held_out_index = []
    for label in sorted(frame[LABEL_COLUMN].unique()):
        index = frame.index[frame[LABEL_COLUMN] == label].to_numpy()
        count = held_out_count(len(index), fraction)
        held_out_index.extend(rng.permutation(index)[:count].tolist())
    held_out_mask = frame.index.isin(held_out_index)
    return frame[~held_out_mask].reset_index(drop=True), frame[held_out_mask].reset_index(drop=True)


def validation_is_possible(frame: pd.DataFrame, fraction: float) -> bool:
    """Whether stratified_split would hold out at least one row of every label; when it would not, the
    data is a few-shot set: no validation split, and the train step cross-validates instead."""
    counts = frame[LABEL_COLUMN].value_counts()
    return bool(len(counts)) and all(held_out_count(int(rows), fraction) >= 1 for rows in counts)


def drop_test_overlap(pool: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, dropped): rows of `pool` (train + validation to be) whose sentence also occurs in `test`."""
    # A sentence-pair row overlaps when both its texts do (text_pairs.model_texts), not its first alone.
    shared = sentence_key(model_texts(pool)).isin(set(sentence_key(model_texts(test))))
    return pool[~shared].reset_index(drop=True), pool[shared].reset_index(drop=True)
