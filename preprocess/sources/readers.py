"""Reading one local data file through `datasets`: .tsv, .csv, .parquet or .jsonl.

Every reader returns the same frame: sentence, label (as found: str or int, checked later by the
validation), the slice columns (`slice_columns`, as text, kept so that evaluate can score the model per
value; CoLA's headerless files always keep their source column) and row, the 1-based data row (header
excluded) that error messages point at. The frame's
`attrs` say what the validation's messages and the label set need from the file itself: `user_columns`
(the file's own names of the two columns, for messages) and, for a format that fixes its classes (CoLA's
headerless layout), `label_set`.
"""

import csv
import itertools
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentclf.schema import COLA_LABELS, LABEL_COLUMN, TEXT_COLUMN, TEXT_PAIR_COLUMN
from sentclf.tracking import StepInputError

SUPPORTED_SUFFIXES = (".tsv", ".csv", ".parquet", ".jsonl")
# CoLA's raw release: headerless TSV, source_code <TAB> label <TAB> original_annotation <TAB> sentence.
COLA_SOURCE_COLUMN = "source_code"  # the publication a sentence came from: a slice of every CoLA evaluation
COLA_COLUMNS = [COLA_SOURCE_COLUMN, LABEL_COLUMN, "original_annotation", TEXT_COLUMN]
# Missing slice values (an empty cell, a null) get this value, so that they form a slice of their own.
MISSING_SLICE_VALUE = "(missing)"
# Keys of a read frame's `attrs` (see the module docstring).
USER_COLUMNS_ATTR = "user_columns"
LABEL_SET_ATTR = "label_set"
LABEL_NAMES_ATTR = "label_names"  # value -> class name, where the source names its classes (a hub ClassLabel)
SNIFF_LINES = 20
EXAMPLE_LINES = 5

# The step's log is its record: no progress bars, and datasets' own errors are re-raised with context.
datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Columns:
    """The user's names of the text and label columns (parameters text_column, label_column), and of the
    columns to keep for sliced metrics (parameter slice_columns; kept under their own names), and of a
    sentence-pair task's second text column (parameter text_pair_column; None: single sentences)."""

    text: str = TEXT_COLUMN
    label: str = LABEL_COLUMN
    slices: tuple[str, ...] = ()
    pair: str | None = None

    @property
    def used(self) -> list[str]:
        """Every column read from a file, in order."""
        return [self.text, *([self.pair] if self.pair else []), self.label, *self.slices]


def check_utf8(path: Path) -> None:
    """Fail with the lines holding non-UTF-8 bytes, instead of a codec error without a position."""
    bad_lines: list[int] = []
    first_byte = 0
    with path.open("rb") as handle:
        # Line by line is exact: byte 0x0A never occurs inside a multi-byte UTF-8 sequence.
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                first_byte = first_byte or line[error.start]
                bad_lines.append(number)
    if bad_lines:
        more = f" (and {len(bad_lines) - 1} more line(s))" if len(bad_lines) > 1 else ""
        raise StepInputError(
            f"{path.name}: line {bad_lines[0]} is not valid UTF-8 (byte {first_byte:#04x}){more}; re-encode "
            "the file as UTF-8"
        )


def require_rows(path: Path, header_lines: int) -> None:
    """An empty file fails here: datasets' own error for it names neither the file nor the problem."""
    with path.open(encoding="utf-8-sig") as handle:
        lines = (line for line in handle if line.strip())
        if next(itertools.islice(lines, header_lines, None), None) is None:
            raise StepInputError(f"{path.name} has no data rows")


def is_cola_tsv(path: Path) -> bool:
    """CoLA's raw layout: no header, 4 tab-separated columns, the 2nd a 0/1 label.

    The first line's label must be a number (a header has a name there); a few bad labels further down
    still count as CoLA, so that they are reported row by row rather than as a missing header.
    """
    with path.open(encoding="utf-8-sig") as handle:
        lines = [line.rstrip("\r\n").split("\t") for line in itertools.islice(handle, SNIFF_LINES)]
    sample = [fields for fields in lines if any(field.strip() for field in fields)]
    if not sample or not all(len(fields) == 4 for fields in sample):
        return False
    binary = sum(fields[1] in ("0", "1") for fields in sample)
    return sample[0][1].strip().isdigit() and 2 * binary > len(sample)


def load_with_datasets(builder: str, path: Path, **options) -> pd.DataFrame:
    """One local file through a `datasets` packaged builder, which reads local files offline."""
    # A throw-away cache: the step image's home may be read-only, and a stale cache must never be read.
    with tempfile.TemporaryDirectory(prefix="sentclf-datasets-") as cache_dir:
        try:
            loaded = datasets.load_dataset(
                builder,
                data_files={"train": str(path)},
                split="train",
                cache_dir=cache_dir,
                keep_in_memory=True,
                **options,
            )
        except datasets.exceptions.DatasetGenerationError as error:
            cause = error.__cause__ or error
            raise StepInputError(f"{path.name} cannot be read as {builder}: {cause}".strip()) from None
        return loaded.to_pandas()


def as_schema_frame(frame: pd.DataFrame, where: str, columns: Columns) -> pd.DataFrame:
    """The user's two columns renamed to the schema's, plus the 1-based data row."""
    require_columns(where, list(frame.columns), columns)
    renamed = frame[[columns.text, columns.label]].rename(
        columns={columns.text: TEXT_COLUMN, columns.label: LABEL_COLUMN}
    )
    if columns.pair:  # a sentence-pair task's second text (preprocess/text_pairs.py)
        renamed.insert(1, TEXT_PAIR_COLUMN, frame[columns.pair].to_numpy())
    slices = {name: slice_values(frame[name]) for name in columns.slices}
    result = renamed.assign(**slices, row=range(1, len(renamed) + 1)).reset_index(drop=True)
    result.attrs = {USER_COLUMNS_ATTR: {TEXT_COLUMN: columns.text, LABEL_COLUMN: columns.label}}
    if columns.pair:
        result.attrs[USER_COLUMNS_ATTR][TEXT_PAIR_COLUMN] = columns.pair
    return result


def slice_values(values: pd.Series) -> list[str]:
    """A slice column's cells as text (a number 3 and a string "3" are one slice); missing ones named."""
    return [MISSING_SLICE_VALUE if pd.isna(v) or str(v).strip() == "" else str(v).strip() for v in values]


def require_columns(where: str, found: list[str], columns: Columns) -> None:
    """A missing column names the file (or data set), the columns there, and the parameter to set."""
    for role, name, parameter in (
        ("text", columns.text, "text_column"),
        ("label", columns.label, "label_column"),
        *((("second text", columns.pair, "text_pair_column"),) if columns.pair else ()),
        *(("slice", name, "slice_columns") for name in columns.slices),
    ):
        if name not in found:
            raise StepInputError(
                f"{where}: no {role} column {name!r}; columns found: {found}. Set the parameter "
                f"{parameter} (-P {parameter}=<column>) to the name of the {role} column"
            )


def read_cola_tsv(path: Path, slices: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CoLA raw-release TSV (headerless, 4 columns) as a sentence/label/row frame, with its source column
    (and any other of its columns named in `slices`) kept for sliced metrics."""
    if not path.is_file():
        raise StepInputError(f"CoLA file {path} not found")
    check_utf8(path)
    require_rows(path, header_lines=0)
    frame = load_with_datasets(
        "csv",
        path,
        delimiter="\t",
        header=None,
        column_names=COLA_COLUMNS,
        # CoLA sentences contain quote characters that are text, not CSV quoting.
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,
        features=datasets.Features({name: datasets.Value("string") for name in COLA_COLUMNS}),
    )
    # CoLA's layout is CoLA's labels: 0/1 acceptability, so any other value is a bad row, not a class.
    kept = tuple(dict.fromkeys((COLA_SOURCE_COLUMN, *slices)))
    result = as_schema_frame(frame, path.name, Columns(slices=kept))
    result.attrs[LABEL_SET_ATTR] = COLA_LABELS
    return result


def read_delimited(path: Path, columns: Columns) -> pd.DataFrame:
    """A .csv or a .tsv with a header row; every cell is read as text so no column is re-typed."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # Minimal quoting, as pandas and Python's csv write both: a quote inside a field is text; only a
    # field that starts with one is read as quoted (CoLA's headerless TSV is read without quoting).
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), [])
    require_columns(path.name, header, columns)
    require_rows(path, header_lines=1)
    used = columns.used
    frame = load_with_datasets(
        "csv",
        path,
        delimiter=delimiter,
        usecols=used,
        keep_default_na=False,
        encoding="utf-8-sig",
        features=datasets.Features({name: datasets.Value("string") for name in used}),
    )
    return as_schema_frame(frame, path.name, columns)


def read_parquet(path: Path, columns: Columns) -> pd.DataFrame:
    try:
        found = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as error:
        raise StepInputError(f"{path.name} is not a readable parquet file: {error}") from None
    require_columns(path.name, found, columns)
    if pq.read_metadata(path).num_rows == 0:
        raise StepInputError(f"{path.name} has no data rows")
    frame = load_with_datasets("parquet", path, columns=columns.used)
    return as_schema_frame(frame, path.name, columns)


def first_bad_json_line(path: Path) -> str:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {number} is not valid JSON ({error.msg})"
            if not isinstance(record, dict):
                return f"line {number} is not a JSON object"
    return "it is not JSON Lines (one JSON object per line)"


def read_jsonl(path: Path, columns: Columns) -> pd.DataFrame:
    require_rows(path, header_lines=0)
    try:
        frame = load_with_datasets("json", path)
    except StepInputError:
        # datasets' message names neither the line nor the problem in user terms.
        raise StepInputError(f"{path.name}: {first_bad_json_line(path)}") from None
    return as_schema_frame(frame, path.name, columns)


def read_file(path: Path, columns: Columns) -> pd.DataFrame:
    """Any supported file; a headerless CoLA TSV is recognised and read with CoLA's column names."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv", ".jsonl"):
        check_utf8(path)
    if suffix == ".tsv" and is_cola_tsv(path):
        logger.info("%s: headerless CoLA TSV (text_column and label_column do not apply)", path.name)
        return read_cola_tsv(path, columns.slices)
    if suffix in (".tsv", ".csv"):
        return read_delimited(path, columns)
    if suffix == ".parquet":
        return read_parquet(path, columns)
    if suffix == ".jsonl":
        return read_jsonl(path, columns)
    raise StepInputError(
        f"{path.name}: unsupported file type {suffix or '(none)'!r}; use one of "
        f"{', '.join(SUPPORTED_SUFFIXES)}"
    )
