"""Data sources of the preprocess step, chosen by the `dataset` parameter:

- `cola`: the CoLA files shipped with this step (offline);
- a local file (.tsv, .csv, .parquet, .jsonl) or a directory holding a train file and optionally a
  held-out file (its name containing test, dev or validation). Under `mlflow run` only this step's
  directory is mounted in the container, so the path must lie inside preprocess/ and is given relative
  to it (preprocess/data/mine.csv -> `data/mine.csv`; the `preprocess/` prefix is accepted too);
- a Hugging Face hub id (`glue/cola`), where a hub is reachable.

Every source yields the same frames: sentence, label, row (1-based data row for error messages).
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sentclf.tracking import StepInputError

from .hub import load_hub_frames, parse_hub_id
from .readers import SUPPORTED_SUFFIXES, Columns, read_cola_tsv, read_file

STEP_DIR = Path(__file__).resolve().parent.parent
# The step's directory in the repository; in the container it is mounted as /mlflow/projects/code.
STEP_NAME = "preprocess"
SHIPPED_COLA_DIR = STEP_DIR / "data" / "cola"
# Name words marking a directory's held-out file, in order of preference.
HELD_OUT_WORDS = (("test",), ("dev",), ("validation", "valid", "val"))

logger = logging.getLogger(__name__)

__all__ = ["Columns", "Source", "load_cola", "load_source", "read_cola_tsv"]


@dataclass
class Source:
    """Loaded frames by split name (`train`, and `test` when the source has a held-out file)."""

    frames: dict[str, pd.DataFrame]
    origin: dict[str, str]  # split -> file name, for messages
    description: str
    lineage: dict[str, object]  # split -> `source` of mlflow.data.from_pandas (a path or a DatasetSource)


def display_path(path: Path) -> str:
    """A path that means the same on the host and in the container: relative to the repo for step files."""
    path = path.resolve()
    if path.is_relative_to(STEP_DIR):
        return str(Path(STEP_NAME) / path.relative_to(STEP_DIR))
    return str(path)


def load_cola(directory: Path = SHIPPED_COLA_DIR) -> Source:
    """The shipped CoLA release: in_domain_train (train + validation) and in_domain_dev (held-out test)."""
    files = {"train": directory / "in_domain_train.tsv", "test": directory / "in_domain_dev.tsv"}
    return Source(
        frames={split: read_cola_tsv(path) for split, path in files.items()},
        origin={split: path.name for split, path in files.items()},
        description=f"cola ({directory.name}: in_domain_train.tsv, in_domain_dev.tsv)",
        lineage={split: display_path(path) for split, path in files.items()},
    )


def name_words(path: Path) -> list[str]:
    return re.split(r"[^a-z0-9]+", path.stem.lower())


def pick_held_out(train: Path, candidates: list[Path]) -> Path | None:
    """The held-out file; among several of one kind, the one named like the train file."""
    for words in HELD_OUT_WORDS:
        matches = [path for path in candidates if set(words) & set(name_words(path))]
        if len(matches) > 1:
            # e.g. CoLA's in_domain_dev.tsv next to out_of_domain_dev.tsv, for in_domain_train.tsv
            twins = [path for path in matches if train.stem in {re.sub(w, "train", path.stem) for w in words}]
            if len(twins) != 1:
                raise StepInputError(
                    f"{train.parent}: several held-out files {[p.name for p in matches]}; keep one next "
                    f"to {train.name}, or pass the train file alone (a test split is then held out)"
                )
            matches = twins
        if matches:
            return matches[0]
    return None


def directory_files(directory: Path) -> dict[str, Path]:
    """{"train": path} plus "test" when the directory holds a held-out file."""
    files = sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES and not path.name.startswith(".")
    )
    trains = [path for path in files if "train" in name_words(path)]
    if len(trains) != 1:
        raise StepInputError(
            f"{directory}: expected one data file with `train` in its name, found "
            f"{[p.name for p in trains] or 'none'} among {[p.name for p in files]} "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    held_out = pick_held_out(trains[0], [path for path in files if path != trains[0]])
    return {"train": trains[0]} | ({"test": held_out} if held_out else {})


def load_local(path: Path, columns: Columns) -> Source:
    files = directory_files(path) if path.is_dir() else {"train": path}
    names = ", ".join(f"{split}={file.name}" for split, file in files.items())
    names += f"; text_column={columns.text}, label_column={columns.label}"
    return Source(
        frames={split: read_file(file, columns) for split, file in files.items()},
        origin={split: file.name for split, file in files.items()},
        description=f"{display_path(path)} ({names})",
        lineage={split: display_path(file) for split, file in files.items()},
    )


def local_path(dataset: str) -> Path | None:
    """The existing file or directory `dataset` names: as given, else relative to this step's directory."""
    given = Path(dataset).expanduser()
    candidates = [given]
    if not given.is_absolute():
        candidates.append(STEP_DIR / given)
        if given.parts and given.parts[0] == STEP_NAME:
            # `preprocess/data/x.csv` from the repository root means `data/x.csv` inside the container.
            candidates.append(STEP_DIR.joinpath(*given.parts[1:]))
    return next((path for path in candidates if path.exists()), None)


def looks_like_path(dataset: str) -> bool:
    return dataset.startswith(("/", ".", "~")) or Path(dataset).suffix.lower() in SUPPORTED_SUFFIXES


def hub_source(dataset: str, columns: Columns) -> Source:
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    loaded = load_hub_frames(dataset, columns)
    path, config = parse_hub_id(dataset)
    return Source(
        frames={split: frame for split, (_, frame) in loaded.items()},
        origin={split: f"{dataset} ({hub_split} split)" for split, (hub_split, _) in loaded.items()},
        description=f"hub {dataset} ({', '.join(f'{s}={h}' for s, (h, _) in loaded.items())}; "
        f"text_column={columns.text}, label_column={columns.label})",
        lineage={
            split: HuggingFaceDatasetSource(path=path, config_name=config, split=hub_split)
            for split, (hub_split, _) in loaded.items()
        },
    )


def load_source(dataset: str, columns: Columns | None = None) -> Source:
    """Dispatch on the `dataset` parameter."""
    columns = columns or Columns()
    if dataset == "cola":
        return load_cola()
    path = local_path(dataset)
    if path is not None:
        return load_local(path, columns)
    if looks_like_path(dataset):
        raise StepInputError(
            f"dataset {dataset!r}: no such file or directory (looked in {Path.cwd()} and {STEP_DIR}). Under "
            "`mlflow run` only the step's directory is mounted: put the data under preprocess/ (e.g. "
            "preprocess/data/mine.csv) and pass -P dataset=data/mine.csv"
        )
    return hub_source(dataset, columns)
