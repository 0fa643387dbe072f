"""The label set, from the data.

A label value is an integer (an int, an integral float, or digits in a text file: "0" is 0) or a class
name (any other non-empty text). The classes are those of the training files, sorted (numbers
numerically), unless `-P labels=...` fixes them and their order (then any other value is a bad row), or
the file's format fixes them (CoLA's headerless layout: 0/1, unacceptable/acceptable). Classes are named
by their value, unless the parameter (`0:negative`) or the source (a hub ClassLabel, CoLA) names them.

Checks, each a blocking problem that names the file, the class and the fix: one label column mixing
numbers and names; fewer than MIN_CLASSES or more than MAX_CLASSES classes; a class of the held-out
file that training lacks; a class with too few rows to stratify into train, validation (and test), unless
it has enough for few-shot training without a validation split (rows_needed_few_shot: preprocess then
holds none out, and the train step cross-validates).
"""

import re
from collections.abc import Sequence

import pandas as pd

from sentclf.contract import FEW_SHOT_MIN_ROWS_PER_CLASS
from sentclf.schema import LABEL_COLUMN, MAX_CLASSES, MIN_CLASSES, LabelSet

from sources.readers import LABEL_NAMES_ATTR, LABEL_SET_ATTR
from splitting import held_out_count
from validation import ORIGIN_COLUMN, ValidationReport, parse_label, user_column

AUTO = "auto"
# Metric keys keep to what every MLflow store and OS accepts in a key.
METRIC_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
EXAMPLES = 3
# The val_fraction values a too-small class's message may suggest (val_fraction must stay under 0.5).
LARGER_VAL_FRACTIONS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45)


def kind(value: int | str) -> str:
    return "number" if isinstance(value, int) else "name"


def shown(values: Sequence[int | str]) -> str:
    return ", ".join(repr(value) if isinstance(value, str) else str(value) for value in values)


def parse_labels_parameter(text: str) -> LabelSet | None:
    """The `labels` parameter: `auto` (None: from the training data), or the classes in order, comma
    separated, each `value` or `value:name` (`neg,pos,neutral`; `0:negative,1:positive`)."""
    if text.strip().lower() == AUTO:
        return None
    values: list[int | str] = []
    names: list[str] = []
    for item in text.split(","):
        value_text, _, name = item.partition(":")
        value = parse_label(value_text)
        if value is None:
            raise ValueError(
                f"labels={text!r}: {item.strip()!r} is not a class (an integer or a name); give the classes "
                "in order, comma separated, e.g. labels=neg,pos,neutral or labels=0:negative,1:positive"
            )
        values.append(value)
        names.append(name.strip() or str(value))
    if len({kind(value) for value in values}) > 1:
        raise ValueError(f"labels={text!r} mixes numbers and names: a label column holds one or the other")
    duplicated = sorted(
        {str(v) for v in values if values.count(v) > 1} | {n for n in names if names.count(n) > 1}
    )
    if duplicated:
        raise ValueError(f"labels={text!r} repeats {', '.join(duplicated)}")
    if not MIN_CLASSES <= len(values) <= MAX_CLASSES:
        raise ValueError(
            f"labels={text!r} has {len(values)} class(es): give between {MIN_CLASSES} and {MAX_CLASSES}"
        )
    return LabelSet(tuple(names), tuple(values))


def named_by(label_set: LabelSet, names: dict | None, explicit: bool) -> LabelSet:
    """`label_set` with the source's names, where the classes were not named explicitly and the source
    names every one of them."""
    if explicit or not names or not all(value in names for value in label_set.values):
        return label_set
    return LabelSet(tuple(str(names[value]) for value in label_set.values), label_set.values)


def describe_class(label_set: LabelSet, index: int) -> str:
    name, value = label_set.names[index], label_set.values[index]
    return f"class {shown([value])}" if name == str(value) else f"class {name!r} (label {shown([value])})"


def check_mixed_kinds(train: pd.DataFrame, report: ValidationReport) -> bool:
    """One label column holds numbers or names, not both: per file, then across the training files.
    True when they agree."""
    column = user_column(train, LABEL_COLUMN)
    labels = train[LABEL_COLUMN]
    valid = labels.notna()
    kinds = labels[valid].map(kind)
    agree = True
    by_file: dict[str, str] = {}
    for origin, file_kinds in kinds.groupby(train.loc[valid, ORIGIN_COLUMN], sort=False):
        counts = file_kinds.value_counts()
        if len(counts) == 1:
            by_file[str(origin)] = str(counts.index[0])
            continue
        agree = False
        minority = str(counts.index[-1])
        rows = train.loc[file_kinds.index[file_kinds == minority], "row"].tolist()
        examples = {
            k: list(dict.fromkeys(labels[file_kinds.index[file_kinds == k]]))[:EXAMPLES] for k in counts.index
        }
        report.add(
            "error",
            "mixed_label_types",
            str(origin),
            column,
            rows,
            f"the label column mixes {counts['number']} number(s) (e.g. {shown(examples['number'])}) and "
            f"{counts['name']} name(s) (e.g. {shown(examples['name'])}); a label column holds class numbers "
            f"or class names, not both. Fix the rows listed (those holding a {minority}), or give the "
            "classes with -P labels=... (then every other value is a bad row)",
        )
    if agree and len(set(by_file.values())) > 1:
        agree = False
        groups = {k: [origin for origin, v in by_file.items() if v == k] for k in ("number", "name")}
        report.add(
            "error",
            "mixed_label_types",
            "training files",
            column,
            [],
            f"numbers in {', '.join(groups['number'])} but names in {', '.join(groups['name'])}: one label "
            "column holds either class numbers or class names. Make the files agree",
        )
    return agree


def derive_label_set(train: pd.DataFrame, report: ValidationReport) -> LabelSet | None:
    """The classes of the training data, sorted, named by the source where it names them, else by value;
    None (with the problem reported) when they are not a usable label set."""
    column = user_column(train, LABEL_COLUMN)
    origin = ", ".join(dict.fromkeys(train[ORIGIN_COLUMN].astype(str)))
    if not check_mixed_kinds(train, report):
        return None
    counts = train[LABEL_COLUMN].dropna().value_counts()
    values = sorted(counts.index.tolist())
    if len(values) < MIN_CLASSES:
        found = f"only the class {shown(values)}" if values else "no class"
        report.add(
            "error",
            "too_few_classes",
            origin,
            column,
            [],
            f"{found} in the training data: a classifier needs at least {MIN_CLASSES} classes. Add rows of "
            f"the other class(es), or check that -P label_column names the label column (it is {column!r})",
        )
        return None
    if len(values) > MAX_CLASSES:
        report.add(
            "error",
            "too_many_classes",
            origin,
            column,
            [],
            f"{len(values)} classes in the training data (e.g. {shown(values[:EXAMPLES])}); at most "
            f"{MAX_CLASSES} are supported. Check that -P label_column names the label column (it is "
            f"{column!r}, not a text or id column), or merge rare classes",
        )
        return None
    return named_by(LabelSet.from_values(values), train.attrs.get(LABEL_NAMES_ATTR), explicit=False)


def check_unseen_classes(
    test: pd.DataFrame, label_set: LabelSet, train_origin: str, report: ValidationReport
) -> None:
    """Each class of the held-out file must be one the training data has: the model cannot learn it."""
    column = user_column(test, LABEL_COLUMN)
    known = set(label_set.values)
    unseen = test[test[LABEL_COLUMN].notna() & ~test[LABEL_COLUMN].isin(known)]
    for (origin, value), rows in unseen.groupby([ORIGIN_COLUMN, LABEL_COLUMN], sort=False):
        report.add(
            "error",
            "class_not_in_train",
            str(origin),
            column,
            rows["row"].tolist(),
            f"class {shown([value])} is in this held-out file but not in the training data ({train_origin}): "
            f"the model cannot learn it. Add rows of {shown([value])} to the training files, or remove these "
            f"rows from {origin} (the training classes: {shown(label_set.values)})",
        )


def split_counts(rows: int, val_fraction: float, test_fraction: float | None) -> tuple[int, int, int]:
    """(train, validation, test) rows of one class of `rows` rows, as stratified_split makes them; test
    is 0 when a held-out file gives the test split."""
    test = held_out_count(rows, test_fraction) if test_fraction is not None else 0
    validation = held_out_count(rows - test, val_fraction)
    return rows - test - validation, validation, test


def rows_needed(val_fraction: float, test_fraction: float | None) -> int:
    """The fewest rows a class needs for at least one row in each part it is split into."""
    rows = 1
    while not all(split_counts(rows, val_fraction, test_fraction)[: 3 if test_fraction is not None else 2]):
        rows += 1
    return rows


def rows_needed_few_shot(test_fraction: float | None) -> int:
    """The fewest rows a class needs without a validation split: FEW_SHOT_MIN_ROWS_PER_CLASS training rows
    (and a test row, when the test split is held out of the same files)."""
    rows = FEW_SHOT_MIN_ROWS_PER_CLASS
    while test_fraction is not None and (
        held_out_count(rows, test_fraction) < 1
        or rows - held_out_count(rows, test_fraction) < FEW_SHOT_MIN_ROWS_PER_CLASS
    ):
        rows += 1
    return rows


def check_class_rows(
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    label_set: LabelSet,
    val_fraction: float,
    test_fraction: float | None,
    report: ValidationReport,
) -> None:
    """Every class needs enough training rows to stratify into train and validation (and test, when
    the test split is held out of the same files), and at least one row in a held-out test file."""
    column = user_column(train, LABEL_COLUMN)
    origin = ", ".join(dict.fromkeys(train[ORIGIN_COLUMN].astype(str)))
    needed = rows_needed(val_fraction, test_fraction)
    parts = "train, validation and test" if test_fraction is not None else "train and validation"
    fractions = f"val_fraction={val_fraction}" + (
        f", test_fraction={test_fraction}" if test_fraction is not None else ""
    )
    few_shot_needed = rows_needed_few_shot(test_fraction)
    counts = train[LABEL_COLUMN].value_counts()
    for index, value in enumerate(label_set.values):
        rows = int(counts.get(value, 0))
        # few_shot_needed: no validation split is held out, and train cross-validates.
        if rows >= needed or rows >= few_shot_needed:
            continue
        name = describe_class(label_set, index)
        remedy = f"add rows of {name}, or drop the class (remove its rows)"
        larger = next(
            (f for f in LARGER_VAL_FRACTIONS if f > val_fraction and rows >= rows_needed(f, test_fraction)),
            None,
        )
        if larger is not None:
            remedy += f", or raise val_fraction (to {larger}, for {rows} row(s))"
        report.add(
            "error",
            "too_few_rows_per_class",
            origin,
            column,
            [],
            f"{name} has {rows} row(s); {needed} are needed to stratify it into {parts} ({fractions}), "
            f"or {few_shot_needed} for few-shot training without a validation split. Fix: {remedy}",
        )
    if test is None:
        return
    test_counts = test[LABEL_COLUMN].value_counts()
    test_origin = ", ".join(dict.fromkeys(test[ORIGIN_COLUMN].astype(str)))
    for index, value in enumerate(label_set.values):
        if test_counts.get(value, 0) == 0:
            report.add(
                "error",
                "too_few_rows_per_class",
                test_origin,
                user_column(test, LABEL_COLUMN),
                [],
                f"{describe_class(label_set, index)} has no rows in this held-out file, so its test "
                f"figures cannot be measured. Fix: add rows of it to {test_origin}, or drop the class "
                "(remove its rows from the training data)",
            )


def resolve_labels(
    frames: dict[str, pd.DataFrame],
    given: LabelSet | None,
    val_fraction: float,
    test_fraction: float | None,
    report: ValidationReport,
) -> LabelSet | None:
    """The label set of validated splits (validate_parts): `given` (the `labels` parameter) if any, else
    the one the files' format fixes (CoLA's), else the classes of the training data; then the checks
    that need it. `test_fraction` is None when a held-out file is the test split. None when the labels
    are not usable (reported)."""
    train, test = frames["train"], frames.get("test")
    if (
        LABEL_COLUMN not in train
        or train.empty
        or any(p.check in ("missing_column", "empty_split") for p in report.errors)
    ):
        return None  # reported already
    fixed_by_format: LabelSet | None = train.attrs.get(LABEL_SET_ATTR)
    known_names = train.attrs.get(LABEL_NAMES_ATTR) or (
        dict(zip(fixed_by_format.values, fixed_by_format.names, strict=True)) if fixed_by_format else None
    )
    if given is not None:
        named = given.names != tuple(str(value) for value in given.values)
        label_set = named_by(given, known_names, explicit=named)
    else:
        label_set = fixed_by_format or derive_label_set(train, report)
    if label_set is None:
        return None
    if test is not None and given is None and not test.attrs.get(LABEL_SET_ATTR):
        train_origin = ", ".join(dict.fromkeys(train[ORIGIN_COLUMN].astype(str)))
        check_unseen_classes(test, label_set, train_origin, report)
    check_class_rows(train, test, label_set, val_fraction, test_fraction, report)
    return label_set


def encode(frame: pd.DataFrame, label_set: LabelSet) -> pd.DataFrame:
    """`frame` with its label as the class index 0..N-1 (int64) and no attrs; every value must be in
    `label_set`."""
    codes = frame[LABEL_COLUMN].map(label_set.index_of())
    if codes.isna().any():
        raise ValueError("encode() of labels outside the label set: validate first")
    encoded = frame.assign(**{LABEL_COLUMN: codes.astype("int64")})
    # The file's hints (see sources.readers) have served: pandas would write them into the parquet files.
    encoded.attrs = {}
    return encoded


def metric_keys(label_set: LabelSet) -> list[str]:
    """Per class, its name as a metric key part: characters MLflow keys may not hold become `_`; a name
    that is empty after that, or collides with another's, gets its class index appended."""
    keys = [METRIC_KEY_UNSAFE.sub("_", name).strip("_") for name in label_set.names]
    return [
        key if key and keys.count(key) == 1 else f"{key or 'class'}_{index}" for index, key in enumerate(keys)
    ]
