"""Data sources of the preprocess step, chosen by the `dataset` parameter:

- `cola`: the CoLA files shipped with this step (offline);
- a snapshot the conductor logged (`runs:/<parent run>/dataset`, see sentclf.dataset_snapshot): a host
  file or folder, checked against its sha256 manifest;
- a host file (.tsv, .csv, .parquet, .jsonl) or folder, anywhere: an absolute path, or one relative to
  the repository root (then to this step's directory, so `data/mine.csv` still means
  preprocess/data/mine.csv). Run alone under `mlflow run preprocess`, the step reads the host's files
  through a read-only mount of the host's root (see MLproject) and logs a snapshot of what it read;
- a Hugging Face hub id (`glue/cola`), where a hub is reachable.

A folder is where new batches land: its supported files are read together, except a held-out file
(its name containing test, dev or validation), which becomes the test split.

Every source yields the same frames: sentence, label, row (1-based data row for error messages), as
parts per split, one per file, so that each problem names its file.
"""

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sentclf.dataset_snapshot import (
    Manifest,
    SnapshotError,
    build_manifest,
    data_files,
    download_snapshot,
    is_snapshot_uri,
    locate_dataset,
)
from sentclf.tracking import StepInputError

from .hub import load_hub_frames, parse_hub_id
from .readers import SUPPORTED_SUFFIXES, Columns, read_cola_tsv, read_file

STEP_DIR = Path(__file__).resolve().parent.parent
# The step's directory in the repository; in the container it is mounted as /mlflow/projects/code.
STEP_NAME = "preprocess"
SHIPPED_COLA_DIR = STEP_DIR / "data" / "cola"
# Inside the step's container: the host's root, mounted read-only, and the repository's host path.
HOST_ROOT = Path(os.environ.get("SENTCLF_HOST_ROOT", "/mlflow/host"))
HOST_REPO_ENV = "SENTCLF_HOST_REPO"
# Name words marking a directory's held-out file, in order of preference.
HELD_OUT_WORDS = (("test",), ("dev",), ("validation", "valid", "val"))

logger = logging.getLogger(__name__)

__all__ = ["Columns", "Source", "load_cola", "load_source", "read_cola_tsv"]


@dataclass
class Source:
    """Loaded data by split name (`train`, and `test` when the source has a held-out file), as parts:
    (origin, frame) per file, where origin names the file in messages."""

    parts: dict[str, list[tuple[str, pd.DataFrame]]]
    description: str
    lineage: dict[str, object]  # split -> `source` of mlflow.data.from_pandas (a path or a DatasetSource)
    manifest: Manifest | None = None  # the files' hashes: a host file or folder, or the shipped CoLA
    # Where those files are now (a host path, or the downloaded snapshot); None for files that ship with
    # this step's code (the code commit already pins them: nothing to copy into the run).
    data_path: Path | None = None
    ignored: list[str] = field(default_factory=list)  # files of a folder that were not read

    @property
    def origin(self) -> dict[str, str]:
        """split -> the file (or files) it came from, for messages."""
        return {split: ", ".join(origin for origin, _ in parts) for split, parts in self.parts.items()}

    @property
    def frames(self) -> dict[str, pd.DataFrame]:
        """split -> all its parts in one frame (row numbers stay per file)."""
        return {
            split: pd.concat([frame for _, frame in parts], ignore_index=True)
            for split, parts in self.parts.items()
        }


def repo_dir() -> Path:
    """The repository root as the host sees it (the step may run in a container)."""
    return Path(os.environ.get(HOST_REPO_ENV) or STEP_DIR.parent)


def display_path(path: Path) -> str:
    """A path that means the same on the host and in the container: relative to the repo for step files,
    the host's own path for files read through the host-root mount."""
    path = path.resolve()
    if path.is_relative_to(STEP_DIR):
        return str(Path(STEP_NAME) / path.relative_to(STEP_DIR))
    if HOST_ROOT.is_dir() and path.is_relative_to(HOST_ROOT):
        return "/" + str(path.relative_to(HOST_ROOT))
    return str(path)


def load_cola(directory: Path = SHIPPED_COLA_DIR) -> Source:
    """The shipped CoLA release: in_domain_train (train + validation) and in_domain_dev (held-out test),
    hashed like host data, so the run (and the model card) name the bytes it learned from."""
    files = {"train": directory / "in_domain_train.tsv", "test": directory / "in_domain_dev.tsv"}
    return Source(
        parts={split: [(path.name, read_cola_tsv(path))] for split, path in files.items()},
        description=f"cola ({directory.name}: in_domain_train.tsv, in_domain_dev.tsv)",
        lineage={split: display_path(path) for split, path in files.items()},
        manifest=build_manifest(directory, display_path(directory)),
    )


def name_words(path: Path) -> list[str]:
    return re.split(r"[^a-z0-9]+", path.stem.lower())


def held_out_candidates(files: list[Path]) -> list[Path]:
    words = {word for group in HELD_OUT_WORDS for word in group}
    return [path for path in files if words & set(name_words(path))]


def pick_held_out(anchor: Path | None, candidates: list[Path]) -> Path | None:
    """The held-out file; among several of one kind, the one named like the `anchor` train file."""
    for words in HELD_OUT_WORDS:
        matches = [path for path in candidates if set(words) & set(name_words(path))]
        if len(matches) > 1:
            # e.g. CoLA's in_domain_dev.tsv next to out_of_domain_dev.tsv, for in_domain_train.tsv
            twins = [
                path
                for path in matches
                if anchor and anchor.stem in {re.sub(w, "train", path.stem) for w in words}
            ]
            if len(twins) != 1:
                raise StepInputError(
                    f"{matches[0].parent}: several held-out files {[p.name for p in matches]}; keep one, "
                    "or name the train file like one of them (in_domain_train.tsv next to in_domain_dev.tsv)"
                )
            matches = twins
        if matches:
            return matches[0]
    return None


def directory_files(directory: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """({"train": [files read together], "test": [held-out file]}, files left out) for a folder."""
    files = data_files(directory)
    if not files:
        raise StepInputError(
            f"{display_path(directory)}: no data files (supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    candidates = held_out_candidates(files)
    pool = [path for path in files if path not in candidates]
    if not pool:
        raise StepInputError(
            f"{display_path(directory)}: every file {[p.name for p in files]} is named as held-out data "
            "(test, dev, validation); add the training batches next to them"
        )
    trains = [path for path in pool if "train" in name_words(path)]
    held_out = pick_held_out(trains[0] if len(trains) == 1 else None, candidates)
    ignored = [path for path in candidates if path != held_out]
    return {"train": pool} | ({"test": [held_out]} if held_out else {}), ignored


def load_local(path: Path, columns: Columns, manifest: Manifest | None = None) -> Source:
    """A host file or folder, hashed. `manifest` (a snapshot's) names the files as the host had them."""
    files, ignored = directory_files(path) if path.is_dir() else ({"train": [path]}, [])
    manifest = manifest or build_manifest(path, display_path(path))

    def shown(file: Path) -> str:
        return manifest.source if manifest.kind == "file" else str(Path(manifest.source) / file.name)

    names = "; ".join(f"{split}={', '.join(f.name for f in group)}" for split, group in files.items())
    names += f"; text_column={columns.text}, label_column={columns.label}"
    if ignored:
        logger.warning("%s: not read: %s", manifest.source, ", ".join(p.name for p in ignored))
    return Source(
        parts={split: [(shown(f), read_file(f, columns)) for f in group] for split, group in files.items()},
        description=f"{manifest.source} ({names})",
        lineage={split: ", ".join(shown(f) for f in group) for split, group in files.items()},
        manifest=manifest,
        data_path=path,
        ignored=[shown(p) for p in ignored],
    )


def local_path(dataset: str) -> Path | None:
    """The existing file or folder `dataset` names (sentclf.dataset_snapshot.locate_dataset, the walk the
    conductor takes too); in the container, through the host root."""
    return locate_dataset(dataset, repo_dir(), STEP_DIR, HOST_ROOT)


def looks_like_path(dataset: str) -> bool:
    return dataset.startswith(("/", ".", "~")) or Path(dataset).suffix.lower() in SUPPORTED_SUFFIXES


def hub_source(dataset: str, columns: Columns) -> Source:
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    loaded = load_hub_frames(dataset, columns)
    path, config = parse_hub_id(dataset)
    return Source(
        parts={
            split: [(f"{dataset} ({hub_split} split)", frame)] for split, (hub_split, frame) in loaded.items()
        },
        description=f"hub {dataset} ({', '.join(f'{s}={h}' for s, (h, _) in loaded.items())}; "
        f"text_column={columns.text}, label_column={columns.label})",
        lineage={
            split: HuggingFaceDatasetSource(path=path, config_name=config, split=hub_split)
            for split, (hub_split, _) in loaded.items()
        },
    )


def load_source(dataset: str, columns: Columns | None = None, snapshot_dir: Path | None = None) -> Source:
    """Dispatch on the `dataset` parameter. A snapshot URI is downloaded into `snapshot_dir`."""
    columns = columns or Columns()
    if dataset == "cola":
        return load_cola()
    if is_snapshot_uri(dataset):
        return snapshot_source(dataset, columns, snapshot_dir)
    path = local_path(dataset)
    if path is not None:
        return load_local(path, columns)
    if looks_like_path(dataset):
        raise StepInputError(
            f"dataset {dataset!r}: no such file or directory (a relative path is looked up from the "
            f"repository root {repo_dir()}, then from preprocess/). Give the host path of a file or of a "
            "folder of batch files, e.g. -P dataset=/srv/labels/new-batch.tsv"
        )
    return hub_source(dataset, columns)


def snapshot_source(uri: str, columns: Columns, snapshot_dir: Path | None) -> Source:
    """A host file or folder the conductor snapshotted, checked against its manifest."""
    if snapshot_dir is None:
        raise ValueError("a snapshot URI needs a directory to download into")
    try:
        path, manifest = download_snapshot(uri, snapshot_dir)
    except (OSError, SnapshotError) as error:
        raise StepInputError(f"dataset snapshot {uri} cannot be used: {error}") from None
    return load_local(path, columns, manifest)
