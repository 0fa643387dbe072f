"""Data validation: every problem is reported with its file, row and column; blocking ones stop the step
before any data artifact is logged."""

import numbers
from dataclasses import dataclass, field

import pandas as pd

from sentclf.schema import LABEL_COLUMN, LABEL_NAMES, TEXT_COLUMN
from sentclf.tracking import StepInputError

MAX_TEXT_CHARS = 512
MIN_ROWS_PER_CLASS = 2
EXAMPLES_PER_PROBLEM = 5


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
        test_keys = sentence_key(test[TEXT_COLUMN])
        for name in ("train", "validation"):
            shared = test_keys.isin(set(sentence_key(splits[name][TEXT_COLUMN])))
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


def parse_label(value: object) -> int | None:
    """0/1 given as int, integral float (a parquet int column with nulls) or digit string; else None."""
    if isinstance(value, bool):
        return None  # True/False would pass as 1/0, but they are not the label set
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return int(value) if float(value).is_integer() else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def validate_frame(frame: pd.DataFrame, split: str, origin: str, report: ValidationReport) -> pd.DataFrame:
    """Check one file of a split row by row; returns it with integer labels. Problems go into `report`."""
    missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in frame.columns]
    if missing:
        report.add(
            "error",
            "missing_column",
            origin,
            None,
            [],
            f"missing column(s) {missing}; found {list(frame.columns)}",
        )
        return frame
    if frame.empty:
        report.add("error", "empty_split", origin, None, [], f"the {split} split has no rows")
        return frame
    rows = frame["row"] if "row" in frame else pd.Series(range(1, len(frame) + 1), index=frame.index)

    labels = frame[LABEL_COLUMN].map(parse_label)
    valid_label = labels.map(lambda label: label in range(len(LABEL_NAMES)))
    if not valid_label.all():
        report.add(
            "error",
            "bad_label",
            origin,
            LABEL_COLUMN,
            rows[~valid_label].tolist(),
            f"label not in the label set {list(range(len(LABEL_NAMES)))} ({', '.join(LABEL_NAMES)})",
        )
    texts = frame[TEXT_COLUMN]
    not_string = ~texts.map(lambda value: isinstance(value, str))
    if not_string.any():
        report.add(
            "error", "bad_text_type", origin, TEXT_COLUMN, rows[not_string].tolist(), "text is not a string"
        )
    blank = texts.map(lambda value: isinstance(value, str) and not value.strip())
    if blank.any():
        report.add(
            "error",
            "empty_text",
            origin,
            TEXT_COLUMN,
            rows[blank].tolist(),
            "text is empty or whitespace only",
        )
    too_long = texts.map(lambda value: isinstance(value, str) and len(value) > MAX_TEXT_CHARS)
    if too_long.any():
        report.add(
            "warning",
            "long_text",
            origin,
            TEXT_COLUMN,
            rows[too_long].tolist(),
            f"text longer than {MAX_TEXT_CHARS} characters (truncated by the tokenizer)",
        )
    duplicated = frame.duplicated(subset=[TEXT_COLUMN, LABEL_COLUMN], keep="first")
    if duplicated.any():
        report.add(
            "warning",
            "duplicate_row",
            origin,
            None,
            rows[duplicated].tolist(),
            "row repeats an earlier row (same sentence and label)",
        )
    if valid_label.all():
        frame = frame.assign(**{LABEL_COLUMN: labels.astype("int64")})
    return frame


def check_class_counts(frame: pd.DataFrame, origin: str, report: ValidationReport) -> None:
    """Each label needs a few rows in a split as a whole (one batch file may well hold only one class)."""
    if LABEL_COLUMN not in frame or frame.empty or frame[LABEL_COLUMN].dtype != "int64":
        return  # missing or bad labels are already reported row by row
    counts = frame[LABEL_COLUMN].value_counts()
    for index, name in enumerate(LABEL_NAMES):
        if counts.get(index, 0) < MIN_ROWS_PER_CLASS:
            report.add(
                "error",
                "too_few_rows_per_class",
                origin,
                LABEL_COLUMN,
                [],
                f"label {index} ({name}) has {counts.get(index, 0)} row(s); at least "
                f"{MIN_ROWS_PER_CLASS} are needed to split and evaluate",
            )


def validate_parts(
    parts: list[tuple[str, pd.DataFrame]], split: str, report: ValidationReport
) -> pd.DataFrame:
    """Check each file of a split on its own (problems name the file), then the split as a whole;
    returns the split in one frame."""
    checked = [validate_frame(frame, split, origin, report) for origin, frame in parts]
    frame = pd.concat(checked, ignore_index=True)
    check_class_counts(frame, ", ".join(origin for origin, _ in parts), report)
    return frame
