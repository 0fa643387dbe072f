"""`unlabelled`: text without labels that a teacher labels for the student (docs/teacher.md).

A team has far more text than labels: the server's capture folder, a dump of tickets. A teacher's soft
targets on that text teach the small served model what the teacher knows beyond the labelled rows (the
classic lever of distillation). This step reads the text as `tools.label_next` reads it
(sentclf.unlabelled_text), keeps only sentences that are not in any labelled split nor repeated (compared
as the splits' overlap check compares them), and logs them as data/unlabelled.parquet beside the splits;
the train step reads them only when it has a teacher.
"""

import logging

import numpy as np
import pandas as pd

from sentclf.schema import TEXT_COLUMN
from sentclf.tracking import StepInputError
from sentclf.unlabelled_text import NO_UNLABELLED, TextSourceError, any_texts, sentence_key

from sources import local_path

logger = logging.getLogger("preprocess.unlabelled")

__all__ = ["MAX_UNLABELLED_ROWS", "NO_UNLABELLED", "new_texts", "read_unlabelled"]

UNLABELLED_ARTIFACT = "unlabelled.parquet"
# unlabelled_max_rows' default: sentences kept at most (a seeded sample above it); the teacher labels each
# one and the student trains on each one every epoch, so this bounds what the text adds to a train run.
MAX_UNLABELLED_ROWS = 50000


def read_unlabelled(unlabelled: str, text_column: str) -> list[str]:
    """The texts of the file or folder `unlabelled` names (a host path, as `dataset` is given)."""
    path = local_path(unlabelled)
    if path is None:
        raise StepInputError(
            f"unlabelled {unlabelled!r}: no such file or folder (give the host path of a capture folder, or "
            "of a .txt/.csv/.tsv/.jsonl/.parquet file or folder of them; `none` for no unlabelled text)"
        )
    try:
        return any_texts(path, text_column, "unlabelled", "text_column")
    except TextSourceError as error:
        raise StepInputError(str(error).replace(str(path), unlabelled, 1)) from None


def new_texts(
    texts: list[str], splits: dict[str, pd.DataFrame], seed: int, max_rows: int = MAX_UNLABELLED_ROWS
) -> tuple[pd.DataFrame, dict]:
    """The texts that are neither blank, nor in a labelled split, nor a repeat; a seeded sample of
    `max_rows` above that. Returns them as a frame of one text column, and the counts."""
    labelled = {
        sentence_key(t) for frame in splits.values() for t in frame[TEXT_COLUMN] if isinstance(t, str)
    }
    kept, seen, known, repeats = [], set(), 0, 0
    for text in texts:
        key = sentence_key(text)
        if not key:
            continue
        if key in labelled:
            known += 1
        elif key in seen:
            repeats += 1
        else:
            seen.add(key)
            kept.append(text.strip())
    if not kept:
        raise StepInputError(
            f"unlabelled: none of its {len(texts)} texts is new ({known} are labelled rows already, "
            f"{repeats} repeats): point it at text the labelled data does not hold, or use unlabelled=none"
        )
    if len(kept) > max_rows:
        order = np.random.default_rng(seed).permutation(len(kept))[:max_rows]
        logger.warning(
            "unlabelled: %d new texts, a seeded sample of %d kept (unlabelled_max_rows)", len(kept), max_rows
        )
        kept = [kept[i] for i in sorted(order)]
    counts = {
        "unlabelled_rows": len(kept),
        "unlabelled_skipped_labelled": known,
        "unlabelled_repeats": repeats,
    }
    return pd.DataFrame({TEXT_COLUMN: kept}), counts
