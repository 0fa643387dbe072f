"""Sentence pairs in the preprocess step (-P text_pair_column=<column>): the second text column is read
beside the first (sources.readers renames it to the splits' `text_pair`), checked row by row like the
first (a missing or empty second text is a row error naming the file, row and column), kept in the splits,
named in schema.json (`text_pair_column`) and in the run's tag, so that every later step knows the task
reads pairs. Absent, empty or `none`: single sentences, as before.

The profile, the drift check and the label audit see a pair as its two texts together (`model_texts`):
what the model reads, apart from its separator token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from sentclf.schema import TEXT_COLUMN, TEXT_PAIR_COLUMN

from sources.readers import USER_COLUMNS_ATTR

if TYPE_CHECKING:  # validation.py calls this module: no import at run time
    from validation import ValidationReport

NO_PAIR = "none"


def parse_text_pair_column(value: str | None) -> str | None:
    """The user's second text column; None (single sentences) for absent, empty or `none`."""
    name = (value or "").strip()
    return None if not name or name.lower() == NO_PAIR else name


def is_pairs(frame: pd.DataFrame) -> bool:
    return TEXT_PAIR_COLUMN in frame.columns


def model_texts(frame: pd.DataFrame) -> pd.Series:
    """Each row's text as the model reads it: the sentence, or a pair's two texts joined by a space."""
    if not is_pairs(frame):
        return frame[TEXT_COLUMN]
    return frame[TEXT_COLUMN].astype(str) + " " + frame[TEXT_PAIR_COLUMN].astype(str)


def check_pair_column(parts: dict[str, list[tuple[str, pd.DataFrame]]], report: ValidationReport) -> None:
    """With text_pair_column given, every file must have read a second text column: CoLA's headerless
    layout (one text column) cannot hold pairs."""
    for split_parts in parts.values():
        for origin, frame in split_parts:
            if not is_pairs(frame):
                report.add(
                    "error",
                    "missing_column",
                    origin,
                    None,
                    [],
                    "text_pair_column is set but this file has one text column (CoLA's headerless layout "
                    "holds single sentences): give a file with a header and both text columns, or drop "
                    "-P text_pair_column",
                )


def validate_pair_texts(frame: pd.DataFrame, origin: str, report: ValidationReport, rows: pd.Series) -> None:
    """Row errors for a second text that is missing, not a string, or blank; a warning for one longer than
    the first text's limit. Nothing for a single-sentence frame."""
    if not is_pairs(frame):
        return
    column = frame.attrs.get(USER_COLUMNS_ATTR, {}).get(TEXT_PAIR_COLUMN, TEXT_PAIR_COLUMN)
    texts = frame[TEXT_PAIR_COLUMN]
    missing = texts.map(lambda value: value is None or (isinstance(value, float) and pd.isna(value)))
    if missing.any():
        report.add(
            "error",
            "missing_text_pair",
            origin,
            column,
            rows[missing].tolist(),
            "the second text of the pair is missing: every row of a sentence-pair task needs both texts. "
            "Fill or remove these rows",
        )
    not_string = ~missing & ~texts.map(lambda value: isinstance(value, str))
    if not_string.any():
        report.add(
            "error", "bad_text_type", origin, column, rows[not_string].tolist(), "second text is not a string"
        )
    blank = texts.map(lambda value: isinstance(value, str) and not value.strip())
    if blank.any():
        report.add(
            "error",
            "empty_text_pair",
            origin,
            column,
            rows[blank].tolist(),
            "the second text of the pair is empty or whitespace only: every row of a sentence-pair task "
            "needs both texts. Fill or remove these rows",
        )
