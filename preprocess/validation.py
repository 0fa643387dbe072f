"""Data validation: every problem is reported with its file, row and column; blocking ones stop the step
before any data artifact is logged."""

import math
import numbers
import re
from dataclasses import dataclass, field

import pandas as pd

from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, TEXT_PAIR_COLUMN, LabelSet
from sentclf.tracking import StepInputError

from sources.readers import LABEL_NAMES_ATTR, LABEL_SET_ATTR, USER_COLUMNS_ATTR
from text_pairs import is_pairs, model_texts, validate_pair_texts

MAX_TEXT_CHARS = 512
EXAMPLES_PER_PROBLEM = 5
# The file each row of a split came from (validate_parts), so split-wide checks can name it.
ORIGIN_COLUMN = "origin"
INTEGER = re.compile(r"[+-]?\d+")
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass
class Problem:
    severity: str  # "error" blocks the step, "warning" is reported, "info" records what the step changed
    check: str
    origin: str
    column: str | None
    rows: list[int]
    message: str

    def describe(self) -> str:
        where = self.origin + (f", column {self.column}" if self.column else "")
        shown = ", ".join(str(row) for row in self.rows[:EXAMPLES_PER_PROBLEM])
        more = (
            f" (+{len(self.rows) - EXAMPLES_PER_PROBLEM} more)"
            if len(self.rows) > EXAMPLES_PER_PROBLEM
            else ""
        )
        rows = f", row(s) {shown}{more}" if self.rows else ""
        return f"{where}{rows}: {self.message}"


@dataclass
class ValidationReport:
    problems: list[Problem] = field(default_factory=list)

    def add(
        self, severity: str, check: str, origin: str, column: str | None, rows: list[int], message: str
    ) -> None:
        self.problems.append(Problem(severity, check, origin, column, rows, message))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def as_dict(self) -> dict:
        return {
            "passed": not self.errors,
            "problems": [
                {
                    "severity": p.severity,
                    "check": p.check,
                    "origin": p.origin,
                    "column": p.column,
                    "count": len(p.rows),
                    "rows": p.rows[:100],
                    "message": p.describe(),
                }
                for p in self.problems
            ],
        }

    def metrics(self) -> dict[str, float]:
        counts = {
            "validation_errors": len(self.errors),
            "validation_warnings": sum(p.severity == "warning" for p in self.problems),
        }
        for problem in self.problems:
            key = f"validation_{problem.check}_rows"
            counts[key] = counts.get(key, 0) + len(problem.rows)
        return counts

    def raise_if_blocking(self) -> None:
        if self.errors:
            lines = "\n  ".join(p.describe() for p in self.errors)
            raise StepInputError(f"data validation failed, nothing was logged as data:\n  {lines}")

    def check_cross_split_overlap(self, splits: dict[str, pd.DataFrame]) -> None:
        """Sentences of the test split that also occur in train or validation inflate test scores."""
        test = splits["test"]
        test_keys = sentence_key(model_texts(test))  # a pair: both texts
        for name in ("train", "validation"):
            shared = test_keys.isin(set(sentence_key(model_texts(splits[name]))))
            if shared.any():
                rows = test.loc[shared, "row"].tolist() if "row" in test else []
                self.add(
                    "warning",
                    f"overlap_test_{name}",
                    "test split",
                    TEXT_COLUMN,
                    rows,
                    f"{int(shared.sum())} test sentence(s) also occur in the {name} split "
                    "(overlap_policy=drop removes them from train and validation)",
                )

    def check_split_sizes(self, splits: dict[str, pd.DataFrame]) -> None:
        """A split left empty by the fractions would only fail a later step, with a worse message."""
        for name, frame in splits.items():
            if frame.empty:
                self.add(
                    "error",
                    "empty_split",
                    f"{name} split",
                    None,
                    [],
                    f"the {name} split has no rows: the data set is too small for val_fraction / "
                    "test_fraction (or overlap_policy=drop removed every row)",
                )


def sentence_key(texts: pd.Series) -> pd.Series:
    """Sentences compared case- and whitespace-insensitively: the backbone's tokenizer is uncased, so
    such variants are the same input to the model."""
    return texts.map(lambda text: " ".join(text.split()).casefold() if isinstance(text, str) else text)


def parse_label(value: object) -> int | str | None:
    """An int, or a class name (stripped text); None for what is neither: missing, empty, true/false, a
    number that is not an integer."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return int(value) if math.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if INTEGER.fullmatch(text):
            return int(text)
        if not text or NUMBER.fullmatch(text):
            return None
        return text
    return None


def user_column(frame: pd.DataFrame, column: str) -> str:
    """The file's own name of schema column `column` (the user's text_column/label_column), for messages."""
    return frame.attrs.get(USER_COLUMNS_ATTR, {}).get(column, column)


def validate_frame(
    frame: pd.DataFrame, split: str, origin: str, report: ValidationReport, label_set: LabelSet | None = None
) -> pd.DataFrame:
    """Check one file of a split row by row; returns it with its labels parsed (int or class name, see
    parse_label; int64 when all are numbers). Values outside `label_set` (or the set the file's
    format fixes, CoLA's) are bad rows; without one, the label set is derived later. Problems go into
    `report`."""
    missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in frame.columns]
    if missing:
        report.add(
            "error",
            "missing_column",
            origin,
            None,
            [],
            f"missing column(s) {[user_column(frame, c) for c in missing]}; found {list(frame.columns)}",
        )
        return frame
    if frame.empty:
        report.add("error", "empty_split", origin, None, [], f"the {split} split has no rows")
        return frame
    rows = frame["row"] if "row" in frame else pd.Series(range(1, len(frame) + 1), index=frame.index)
    text_column, label_column = user_column(frame, TEXT_COLUMN), user_column(frame, LABEL_COLUMN)

    labels = frame[LABEL_COLUMN].map(parse_label).astype(object)
    unparsed = labels.isna()
    if unparsed.any():
        report.add(
            "error",
            "bad_label",
            origin,
            label_column,
            rows[unparsed].tolist(),
            "label is empty, true/false, or a number that is not an integer: a label is a class number "
            "(0, 1, 2, ...) or a class name. Fix or remove these rows",
        )
    given = label_set is not None
    label_set = label_set or frame.attrs.get(LABEL_SET_ATTR)
    if label_set is not None:
        outside = ~unparsed & ~labels.isin(set(label_set.values))
        if outside.any():
            found = list(dict.fromkeys(labels[outside]))[:3]
            # The set is the `labels` parameter's, or the one the file's format (CoLA's layout) fixes.
            remedy = "add the value(s) to -P labels" if given else "give the classes with -P labels=..."
            report.add(
                "error",
                "bad_label",
                origin,
                label_column,
                rows[outside].tolist(),
                f"label not in the label set {list(label_set.values)} ({', '.join(label_set.names)}); found "
                f"{', '.join(map(repr, found))}. Fix these rows, or {remedy}",
            )
    frame = frame.assign(**{LABEL_COLUMN: labels})
    texts = frame[TEXT_COLUMN]
    not_string = ~texts.map(lambda value: isinstance(value, str))
    if not_string.any():
        report.add(
            "error", "bad_text_type", origin, text_column, rows[not_string].tolist(), "text is not a string"
        )
    blank = texts.map(lambda value: isinstance(value, str) and not value.strip())
    if blank.any():
        report.add(
            "error",
            "empty_text",
            origin,
            text_column,
            rows[blank].tolist(),
            "text is empty or whitespace only",
        )
    too_long = texts.map(lambda value: isinstance(value, str) and len(value) > MAX_TEXT_CHARS)
    if too_long.any():
        report.add(
            "warning",
            "long_text",
            origin,
            text_column,
            rows[too_long].tolist(),
            f"text longer than {MAX_TEXT_CHARS} characters (truncated by the tokenizer)",
        )
    validate_pair_texts(frame, origin, report, rows)
    duplicated = frame.duplicated(subset=[TEXT_COLUMN, *pair_columns(frame), LABEL_COLUMN], keep="first")
    if duplicated.any():
        report.add(
            "warning",
            "duplicate_row",
            origin,
            None,
            rows[duplicated].tolist(),
            "row repeats an earlier row (same sentence and label)",
        )
    if not unparsed.any() and labels.map(lambda label: isinstance(label, int)).all():
        frame = frame.assign(**{LABEL_COLUMN: labels.astype("int64")})
    return frame


def pair_columns(frame: pd.DataFrame) -> list[str]:
    """A sentence-pair frame's second text column (a row repeats another only with both texts), else none."""
    return [TEXT_PAIR_COLUMN] if is_pairs(frame) else []


def validate_parts(
    parts: list[tuple[str, pd.DataFrame]],
    split: str,
    report: ValidationReport,
    label_set: LabelSet | None = None,
) -> pd.DataFrame:
    """Check each file of a split on its own (problems name the file); returns the split in one frame,
    each row with its file (ORIGIN_COLUMN), and the first file's attrs (the user's column names; the
    label set or class names its format fixes, where every file agrees)."""
    checked = [
        validate_frame(frame, split, origin, report, label_set).assign(**{ORIGIN_COLUMN: origin})
        for origin, frame in parts
    ]
    frame = pd.concat(checked, ignore_index=True)
    attrs = dict(parts[0][1].attrs) if parts else {}
    for key in (LABEL_SET_ATTR, LABEL_NAMES_ATTR):
        if any(part.attrs.get(key) != attrs.get(key) for _, part in parts):
            attrs.pop(key, None)
    frame.attrs = attrs
    return frame
