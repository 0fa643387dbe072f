"""Data sources of the preprocess step. Every source yields the same frames: sentence (str), label (int)."""

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN
from sentclf.tracking import StepInputError

STEP_DIR = Path(__file__).resolve().parent
SHIPPED_COLA_DIR = STEP_DIR / "data" / "cola"
# CoLA's raw release: headerless TSV, source_code <TAB> label <TAB> original_annotation <TAB> sentence.
COLA_COLUMNS = ["source_code", LABEL_COLUMN, "original_annotation", TEXT_COLUMN]


@dataclass
class Source:
    """Loaded frames by split name (`train`, and `test` when the source has a held-out file)."""

    frames: dict[str, pd.DataFrame]
    origin: dict[str, str]
    description: str


def decode_utf8(path: Path) -> str:
    """The file's text; non-UTF-8 bytes are reported with their line number instead of a codec error."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise StepInputError(
            f"{path.name}: line {line} is not valid UTF-8 (byte {raw[error.start]:#04x}); re-encode the "
            "file as UTF-8"
        ) from None


def read_cola_tsv(path: Path) -> pd.DataFrame:
    """A CoLA raw-release TSV as sentence/label frame; `row` keeps the 1-based line for error messages."""
    if not path.is_file():
        raise StepInputError(f"CoLA file {path} not found")
    text = decode_utf8(path)
    frame = pd.read_csv(
        io.StringIO(text),
        sep="\t",
        header=None,
        quoting=csv.QUOTE_NONE,
        dtype=str,
        keep_default_na=False,
        on_bad_lines="error",
        names=COLA_COLUMNS,
    )
    frame["row"] = range(1, len(frame) + 1)
    return frame[[TEXT_COLUMN, LABEL_COLUMN, "row"]]


def load_cola(directory: Path = SHIPPED_COLA_DIR) -> Source:
    """The shipped CoLA release: in_domain_train (train + validation) and in_domain_dev (held-out test)."""
    files = {"train": directory / "in_domain_train.tsv", "test": directory / "in_domain_dev.tsv"}
    return Source(
        frames={split: read_cola_tsv(path) for split, path in files.items()},
        origin={split: path.name for split, path in files.items()},
        description=f"cola ({directory.name}: in_domain_train.tsv, in_domain_dev.tsv)",
    )


def load_source(dataset: str) -> Source:
    """Dispatch on the `dataset` parameter."""
    if dataset == "cola":
        return load_cola()
    raise StepInputError(f"unknown dataset {dataset!r}: use `cola` (the CoLA files shipped with this step)")
