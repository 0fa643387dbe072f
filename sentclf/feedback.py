"""Labels that come back from production: the true class of a served request, by its request id.

A feedback folder holds files like training data, anywhere on the machine: CSV (a header row) or JSON lines,
each row naming a request `id` (the Open Inference Protocol request id the caller sent, or the one the
server returned), the true `label` (a class name of the model's label set, or its class index) and
optionally `index` (the sentence's position in the request; 0 when absent) and `model` (the served name;
the server's feedback endpoint writes `feedback-*.jsonl` lines `{"id","index","label","model","time"}`).

Reading never fails on a bad row or file: each is refused, counted by kind and described with its file and
row, and only the rows that passed are evidence. A label names its class by name first (a label set whose
names are digits is read by name), then by index. The same (id, index) twice: the first row (files in name
order, rows in file order) counts, the others are counted as duplicates (or conflicts when they disagree).
Joining the labels to the captured answers (unknown ids, ids of another model's requests) is sentclf.live's.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ID_FIELD = "id"
INDEX_FIELD = "index"
LABEL_FIELD = "label"
MODEL_FIELD = "model"
REQUIRED_FIELDS = (ID_FIELD, LABEL_FIELD)
FEEDBACK_SUFFIXES = (".csv", ".jsonl")
# The server's capture files are JSON lines too: a feedback folder that is also the capture folder must not
# read them as labels.
NOT_FEEDBACK_PREFIX = "capture-"
# Messages kept to describe refused rows (every one is counted).
MAX_PROBLEMS = 50

# Kinds of refused input, as counted and reported.
BAD_FILE = "bad_file"  # a file that cannot be read, or lacks the `id`/`label` columns
BAD_ROW = "bad_row"  # a row that is not a record, lacks an id, or has an index that is not a number >= 0
UNKNOWN_LABEL = "unknown_label"  # a label outside the model's label set
OTHER_MODEL = "other_model"  # a row for another model (its `model` column, or its id is another model's)
DUPLICATE = "duplicate"  # the same (id, index) again with the same label
CONFLICT = "conflict"  # the same (id, index) again with another label


class FeedbackError(ValueError):
    """The feedback folder itself is unusable (missing): nothing can be read from it."""


@dataclass(frozen=True)
class Label:
    id: str
    index: int
    label: int  # the class index
    where: str  # `file:row`, for messages


@dataclass
class Feedback:
    """The labels that passed, and what was refused (counts by kind, messages naming file and row)."""

    folder: Path
    labels: dict[tuple[str, int], Label] = field(default_factory=dict)
    files: int = 0
    rows: int = 0
    refused: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def refuse(self, kind: str, message: str) -> None:
        self.refused[kind] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)

    @property
    def empty_message(self) -> str | None:
        """Why the folder gives no evidence at all, or None."""
        if self.files == 0:
            return (
                f"feedback folder {self.folder} holds no feedback files (*.csv with an `id,label` header, or "
                "*.jsonl lines with `id` and `label`): no labels, no live figures"
            )
        if not self.labels:
            return (
                f"feedback folder {self.folder}: none of its {self.rows} rows is a usable label (see above)"
            )
        return None

    def summary(self) -> str:
        refused = ", ".join(
            f"{count} {kind.replace('_', ' ')}" for kind, count in sorted(self.refused.items())
        )
        return f"{len(self.labels)} labels from {self.rows} rows in {self.files} files of {self.folder}" + (
            f"; refused: {refused}" if refused else ""
        )


def feedback_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in FEEDBACK_SUFFIXES and not p.name.startswith(NOT_FEEDBACK_PREFIX)
    )


def read_feedback(folder: Path, label_names: Sequence[str], model_names: Sequence[str] = ()) -> Feedback:
    """Every feedback file of `folder`, validated against the model's label set; rows whose `model` is not
    one of `model_names` (when given) are refused as another model's."""
    if not folder.is_dir():
        raise FeedbackError(
            f"feedback={folder}: no such folder; give the folder the labels are written to (the server's "
            "FEEDBACK_DIR, or a labelling team's CSV / JSON lines files)"
        )
    result = Feedback(folder)
    by_name = {str(name): index for index, name in enumerate(label_names)}
    for path in feedback_files(folder):
        result.files += 1
        for where, row in _rows(path, result):
            result.rows += 1
            label = _validated(row, where, by_name, len(label_names), set(model_names), result)
            if label is not None:
                _add(result, label)
    return result


def _rows(path: Path, result: Feedback) -> Iterator[tuple[str, object]]:
    """(`file:row`, the row) of one file; a file that cannot be read, or whose CSV header lacks a
    required column, is refused whole."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if path.suffix == ".csv":
                reader = csv.DictReader(handle)
                columns = [c.strip() for c in reader.fieldnames or []]
                missing = [c for c in REQUIRED_FIELDS if c not in columns]
                if missing:
                    result.refuse(
                        BAD_FILE,
                        f"{path}: columns {columns or '(none)'} lack {missing}: a feedback CSV has a header "
                        "row with `id` and `label` (and optionally `index`); the whole file is refused",
                    )
                    return
                for number, row in enumerate(reader, start=2):
                    yield f"{path}:{number}", {(k or "").strip(): v for k, v in row.items()}
            else:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield f"{path}:{number}", json.loads(line)
                    except ValueError:
                        result.rows += 1
                        result.refuse(BAD_ROW, f"{path}:{number}: not a JSON object ({line.strip()[:60]!r})")
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        result.refuse(BAD_FILE, f"{path}: cannot be read ({error}); the rest of the file is refused")


def _validated(
    row: object, where: str, by_name: dict[str, int], classes: int, models: set[str], result: Feedback
) -> Label | None:
    if not isinstance(row, dict):
        result.refuse(BAD_ROW, f"{where}: not a record with `id` and `label`")
        return None
    missing = [name for name in REQUIRED_FIELDS if row.get(name) in (None, "")]
    if missing:
        result.refuse(
            BAD_ROW, f"{where}: no {' and no '.join(f'`{m}`' for m in missing)} (columns: {sorted(row)})"
        )
        return None
    model = row.get(MODEL_FIELD)
    if models and model not in (None, "") and str(model) not in models:
        result.refuse(
            OTHER_MODEL, f"{where}: a label for model {model!r}, not {' / '.join(sorted(models))}; refused"
        )
        return None
    index = _index(row.get(INDEX_FIELD))
    if index is None:
        result.refuse(
            BAD_ROW, f"{where}: index {row.get(INDEX_FIELD)!r} is not a sentence position (0, 1, ...)"
        )
        return None
    label = _class(row[LABEL_FIELD], by_name, classes)
    if label is None:
        names = list(by_name)
        shown = names if len(names) <= 10 else [*names[:10], "..."]
        result.refuse(
            UNKNOWN_LABEL,
            f"{where}: label {row[LABEL_FIELD]!r} is not in the model's label set {shown} "
            f"(a class name, or its index 0..{classes - 1})",
        )
        return None
    return Label(str(row[ID_FIELD]).strip(), index, label, where)


def _index(value: object) -> int | None:
    if value in (None, ""):
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _class(value: object, by_name: dict[str, int], classes: int) -> int | None:
    """A class name (first), else a class index (a JSON integer or a string of digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text in by_name:
            return by_name[text]
        value = int(text) if text.isdigit() else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value < classes:
        return value
    return None


def _add(result: Feedback, label: Label) -> None:
    key = (label.id, label.index)
    first = result.labels.get(key)
    if first is None:
        result.labels[key] = label
    elif first.label == label.label:
        result.refuse(
            DUPLICATE,
            f"{label.where}: request {label.id!r} sentence {label.index} again (first at {first.where})",
        )
    else:
        result.refuse(
            CONFLICT,
            f"{label.where}: request {label.id!r} sentence {label.index} labelled {label.label}, but "
            f"{first.where} said {first.label}; the first counts",
        )
