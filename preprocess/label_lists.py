"""Several labels per text (`-P label_mode=multi`): parse, validate, name and split them.

The labels come either as a delimited list in one column (`-P label_column=labels`, `-P label_delimiter=|`:
`billing|login`) or as one 0/1 column per label (`-P label_column=billing,login,shipping,refund`: two or
more comma-separated names make it this form; each column's name is the label's name). Every row needs at
least one label. Row errors (each naming the file, the rows and the column, before anything is logged):
an empty label list, a label outside `-P labels=...` where it is given, a list that also holds another
common delimiter than the chosen one (`billing,login` with `|`: mixed delimiters), an indicator cell that
is not 0 or 1. The label set is the union of the training files' labels, sorted, unless `-P labels=...`
gives it in order; a label of the held-out file that training lacks, or one with fewer than
MIN_LABEL_ROWS training rows, is an error.

The splits store `label` as the sorted list of the row's label indices (parquet list<int64>); schema.json
says `label_mode: multi`. Stratification: exact multi-label stratification is not attempted; each row is
stratified on its rarest label (by training frequency), so every label, rare ones first, keeps about its
share in each split (the documented fallback; see docs/multi-label.md).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sentclf.schema import LABEL_COLUMN, LabelSet

from sources import Columns
from splitting import stratified_split
from validation import ORIGIN_COLUMN, ValidationReport, user_column

# The delimiters a list is checked against: a cell holding one of these besides the chosen one mixes them.
COMMON_DELIMITERS = ("|", ",", ";")
# A label needs this many training rows (before the validation split) to be learned and split.
MIN_LABEL_ROWS = 3
# The parsed list of names per row, while the splits are validated (replaced by indices by encode).
NAMES_COLUMN = "label_names_parsed"
TRUE_VALUES, FALSE_VALUES = {"1", "1.0", "true"}, {"0", "0.0", "false"}


def indicator_columns(label_column: str) -> tuple[str, ...]:
    """The 0/1 columns `label_column` names (two or more, comma separated); () for one list column."""
    names = tuple(dict.fromkeys(part.strip() for part in label_column.split(",") if part.strip()))
    return names if len(names) >= 2 else ()


def source_columns(
    text_column: str, label_column: str, slices: Sequence[str], pair: str | None = None
) -> Columns:
    """What the readers load: the text, the label list column (or the first 0/1 column as `label` and the
    others beside it, read as text like slice columns), the slice columns, and a sentence pair's second
    text column (None: single sentences)."""
    indicators = indicator_columns(label_column)
    if not indicators:
        return Columns(text_column, label_column.strip(), tuple(slices), pair)
    return Columns(text_column, indicators[0], (*indicators[1:], *slices), pair)


def is_list_column(labels: pd.Series) -> bool:
    """True when the label column holds lists (a multi-label split, as written or read back)."""
    return bool(len(labels)) and isinstance(labels.iloc[0], list | tuple | np.ndarray)


def label_counts(labels: pd.Series, size: int) -> np.ndarray:
    """Rows per class index: a single-label column's bincount, or, for lists, rows holding each label."""
    if not is_list_column(labels):
        return np.bincount(labels.to_numpy(dtype=int), minlength=size)
    flat = [int(index) for row in labels for index in row]
    return np.bincount(np.asarray(flat, dtype=int), minlength=size)


def multi_hot(labels: pd.Series, size: int) -> np.ndarray:
    """float32 [rows, size]: 1 where the row holds the label (what the sigmoid head is trained on)."""
    matrix = np.zeros((len(labels), size), dtype=np.float32)
    for row, indices in enumerate(labels):
        matrix[row, np.asarray(indices, dtype=int)] = 1.0
    return matrix


def _split_list(cell: object, delimiter: str) -> tuple[list[str] | None, str | None]:
    """(names, None) or (None, problem) for one list cell."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return None, "empty"
    text = str(cell).strip()
    others = [d for d in COMMON_DELIMITERS if d != delimiter and d in text]
    if others:
        return None, "mixed"
    names = list(dict.fromkeys(part.strip() for part in text.split(delimiter) if part.strip()))
    return (names, None) if names else (None, "empty")


def _indicator(cell: object) -> bool | None:
    """A 0/1 cell as a bool; None for anything else."""
    if isinstance(cell, bool):
        return cell
    if isinstance(cell, numbers.Number) and cell in (0, 1):
        return bool(cell)
    text = str(cell).strip().lower()
    return True if text in TRUE_VALUES else False if text in FALSE_VALUES else None


def parse_part(
    frame: pd.DataFrame,
    origin: str,
    report: ValidationReport,
    label_column: str,
    delimiter: str,
    allowed: LabelSet | None,
) -> pd.DataFrame:
    """One file's labels as NAMES_COLUMN (a list of names per row; [] for a bad row); LABEL_COLUMN becomes
    the list joined (what the shared text checks and the duplicate check read); problems into `report`."""
    rows = frame["row"] if "row" in frame else pd.Series(range(1, len(frame) + 1), index=frame.index)
    indicators = indicator_columns(label_column)
    problems: dict[str, tuple[str, list[int]]] = {}

    def problem(key: str, column: str, row: int) -> None:
        problems.setdefault(key, (column, []))[1].append(int(row))

    parsed: list[list[str]] = []
    if indicators:
        cells = frame[[LABEL_COLUMN, *indicators[1:]]].set_axis(list(indicators), axis=1)
        for row, values in zip(rows, cells.itertuples(index=False), strict=True):
            flags = [_indicator(value) for value in values]
            for name, flag in zip(indicators, flags, strict=True):
                if flag is None:
                    problem(f"not01:{name}", name, row)
            names = [name for name, flag in zip(indicators, flags, strict=True) if flag]
            if None not in flags and not names:
                problem("empty", ", ".join(indicators), row)
            parsed.append(names if None not in flags else [])
        frame = frame.drop(columns=list(indicators[1:]))
    else:
        column = user_column(frame, LABEL_COLUMN)
        for row, cell in zip(rows, frame[LABEL_COLUMN], strict=True):
            names, issue = _split_list(cell, delimiter)
            if issue:
                problem(issue, column, row)
            parsed.append(names or [])
    if allowed is not None:
        known = set(allowed.names)
        column = ", ".join(indicators) or user_column(frame, LABEL_COLUMN)
        for row, names in zip(rows, parsed, strict=True):
            if any(name not in known for name in names):
                problem("unknown", column, row)
    _report(problems, origin, report, delimiter, allowed, parsed, rows)
    joined = [delimiter.join(names) if names else "(invalid)" for names in parsed]
    return frame.assign(**{LABEL_COLUMN: joined, NAMES_COLUMN: parsed})


def _report(
    problems: dict[str, tuple[str, list[int]]],
    origin: str,
    report: ValidationReport,
    delimiter: str,
    allowed: LabelSet | None,
    parsed: list[list[str]],
    rows: pd.Series,
) -> None:
    for key, (column, bad_rows) in problems.items():
        if key == "empty":
            message = "no label: a multi-label row needs at least one label. Fix or remove these rows"
        elif key == "mixed":
            message = (
                f"label list mixes delimiters: the labels are separated by {delimiter!r} "
                f"(-P label_delimiter), but the cell also holds one of {list(COMMON_DELIMITERS)}. Use one"
            )
        elif key == "unknown":
            by_row = dict(zip(rows.tolist(), parsed, strict=True))
            found = {name for row in bad_rows for name in by_row[row] if name not in allowed.names}
            message = (
                f"label not in the label set {list(allowed.names)}; found {sorted(found)[:3]}. Fix these "
                "rows, or add the name(s) to -P labels"
            )
        else:
            message = "not 0 or 1: each label column holds 1 (the text has the label) or 0"
        report.add("error", "bad_label", origin, column, bad_rows, message)


def resolve_multi_labels(
    frames: dict[str, pd.DataFrame], given: LabelSet | None, report: ValidationReport
) -> LabelSet | None:
    """The label set: `given` (the labels parameter, names in order), else the training files' labels,
    sorted. Errors: a held-out label training lacks, a label with too few training rows, too few labels."""
    train = frames["train"]
    counts = pd.Series([name for names in train[NAMES_COLUMN] for name in names]).value_counts()
    origin = ", ".join(dict.fromkeys(train[ORIGIN_COLUMN])) if ORIGIN_COLUMN in train else "train"
    if given is not None:
        names = tuple(given.names)
    else:
        names = tuple(sorted(counts.index))
        if "test" in frames:
            unseen = sorted({name for names_ in frames["test"][NAMES_COLUMN] for name in names_} - set(names))
            if unseen:
                report.add(
                    "error",
                    "unseen_label",
                    ", ".join(dict.fromkeys(frames["test"][ORIGIN_COLUMN])),
                    None,
                    [],
                    f"label(s) {unseen} of the held-out file never occur in training: add training rows",
                )
    rare = [name for name in names if counts.get(name, 0) < MIN_LABEL_ROWS]
    if rare:
        report.add(
            "error",
            "rare_label",
            origin,
            None,
            [],
            f"label(s) {rare} have fewer than {MIN_LABEL_ROWS} training rows: add rows for them or drop them",
        )
    try:
        return LabelSet(names, names)
    except ValueError as error:
        report.add("error", "label_set", origin, None, [], f"multi-label set {list(names)}: {error}")
        return None


def encode(frame: pd.DataFrame, label_set: LabelSet) -> pd.DataFrame:
    """LABEL_COLUMN as each row's sorted label indices; the parsed names dropped."""
    index = {name: i for i, name in enumerate(label_set.names)}
    labels = [sorted(index[name] for name in names) for names in frame[NAMES_COLUMN]]
    return frame.drop(columns=[NAMES_COLUMN]).assign(**{LABEL_COLUMN: labels})


def strata(labels: pd.Series) -> np.ndarray:
    """Each row's rarest label (by frequency in `labels`; ties to the lower index): its stratum."""
    size = max(int(i) for row in labels for i in row) + 1
    counts = label_counts(labels, size)
    return np.array([min(row, key=lambda i: (counts[int(i)], int(i))) for row in labels], dtype=np.int64)


def multilabel_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """stratified_split on each row's rarest label (see the module docstring), labels kept."""
    keyed = frame.assign(stratum_labels=frame[LABEL_COLUMN], **{LABEL_COLUMN: strata(frame[LABEL_COLUMN])})
    parts = stratified_split(keyed, fraction, seed)
    return tuple(
        part.assign(**{LABEL_COLUMN: part["stratum_labels"]}).drop(columns=["stratum_labels"])
        for part in parts
    )
