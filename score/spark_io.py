"""What the score sub-project reads and writes: input files as preprocess reads them (TSV, CSV, Parquet,
JSON Lines; a file or a folder of them; a headerless CoLA TSV recognised), from anywhere on the host through
the read-only mount of its root, and the output folder on the host, written through the Docker engine
(the container sees the host read-only; the engine bind-mounts exactly the output folder for the copy).
"""

import csv
import io
import logging
import os
import tarfile
from pathlib import Path

import pandas as pd

from sentclf.images import score_image
from sentclf.schema import DATA_SUFFIXES
from sentclf.tracking import StepInputError

logger = logging.getLogger("score")

# Inside the container: the host's root, mounted read-only, and the repository's host path.
HOST_ROOT = Path(os.environ.get("SENTCLF_HOST_ROOT", "/mlflow/host"))
STEP_DIR = Path(__file__).resolve().parent
TEXT_COLUMN = "text"
# A sentence-pair model's second text (-P text_pair_column=<column>): the pyfunc's second column.
TEXT_PAIR_COLUMN = "text_pair"
# A column of these names is the text, in this order, unless text_column names one.
TEXT_CANDIDATES = ("text", "sentence")
COLA_SENTENCE_COLUMN = 3  # a CoLA TSV: source, label, original label, sentence; no header


def repo_dir() -> Path:
    return Path(os.environ.get("SENTCLF_HOST_REPO") or STEP_DIR.parent)


def in_container() -> bool:
    return HOST_ROOT.is_dir()


def host_path(given: str) -> Path:
    """The host path `given` names (absolute, `~`, or relative to the repository root)."""
    path = Path(given).expanduser()
    return path if path.is_absolute() else repo_dir() / path


def readable(path: Path) -> Path:
    """Where this process reads a host path: through the host-root mount inside the container."""
    return HOST_ROOT / path.relative_to("/") if in_container() else path


def input_files(given: str) -> list[Path]:
    """The supported files `input` names (a file, or a folder's files sorted by name), as readable here."""
    source = host_path(given)
    local = readable(source)
    if local.is_file():
        if local.suffix.lower() not in DATA_SUFFIXES:
            raise StepInputError(f"input {source}: not one of {', '.join(DATA_SUFFIXES)}")
        return [local]
    if local.is_dir():
        files = sorted(p for p in local.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
        if not files:
            raise StepInputError(f"input {source}: a folder without {', '.join(DATA_SUFFIXES)} files")
        return files
    raise StepInputError(f"input={given!r}: no file or folder {source} on this machine")


def is_cola_tsv(path: Path) -> bool:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first = next(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), [])
    return len(first) == 4 and first[1].strip() in ("0", "1")


def pick_column(columns: list[str], text_column: str, where: str) -> str:
    if text_column != "auto":
        if text_column not in columns:
            raise StepInputError(f"{where}: no column {text_column!r}; columns found: {columns}")
        return text_column
    for name in TEXT_CANDIDATES:
        if name in columns:
            return name
    if len(columns) == 1:
        return columns[0]
    raise StepInputError(
        f"{where}: which column is the text? None is named {' or '.join(TEXT_CANDIDATES)} among "
        f"{columns}: set -P text_column=<column>"
    )


def read_texts(path: Path, text_column: str = "auto") -> pd.Series:
    """The text column of one file, as strings (empty cells are empty strings)."""
    suffix = path.suffix.lower()
    if suffix == ".tsv" and is_cola_tsv(path):
        frame = pd.read_csv(
            path, sep="\t", header=None, quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False
        )
        return frame[COLA_SENTENCE_COLUMN].rename(TEXT_COLUMN)
    if suffix in (".tsv", ".csv"):
        frame = pd.read_csv(
            path,
            sep="\t" if suffix == ".tsv" else ",",
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
        )
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_json(path, lines=True, dtype=False)
    column = pick_column([str(c) for c in frame.columns], text_column, path.name)
    return frame[column].fillna("").astype(str).rename(TEXT_COLUMN)


def read_pair_texts(path: Path, text_pair_column: str) -> pd.Series:
    """A sentence-pair model's second texts of one file, from the column the user named."""
    if path.suffix.lower() == ".tsv" and is_cola_tsv(path):
        raise StepInputError(f"{path.name}: a headerless CoLA TSV holds one text per row, no second text")
    return read_texts(path, text_pair_column).rename(TEXT_PAIR_COLUMN)


def read_inputs(
    given: str, text_column: str = "auto", text_pair_column: str | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One `text` frame of every input file (with `text_pair` for a sentence-pair model), and the rows
    each file gave."""
    parts, rows = [], {}
    for path in input_files(given):
        texts = read_texts(path, text_column)
        if text_pair_column:
            texts = pd.concat([texts, read_pair_texts(path, text_pair_column)], axis=1)
        parts.append(texts)
        rows[path.name] = len(texts)
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.to_frame() if isinstance(frame, pd.Series) else frame
    if frame.empty:
        raise StepInputError(f"input {given}: no rows")
    return frame, rows


def _owner(path: Path) -> tuple[int, int]:
    """uid and gid of the nearest existing folder at or above the host path (read through the mount)."""
    for candidate in (path, *path.parents):
        local = readable(candidate)
        if local.exists():
            info = local.stat()
            return info.st_uid, info.st_gid
    return 0, 0


def deliver(files: dict[str, Path], output: Path) -> None:
    """Write `files` (name -> local file) into the host folder `output`, created if missing, owned like
    its parent. On the host directly; from the container through the engine: a container of this image
    with exactly `output` bind-mounted receives them as an archive, and is removed."""
    if not in_container():
        output.mkdir(parents=True, exist_ok=True)
        for name, path in files.items():
            (output / name).write_bytes(path.read_bytes())
        return
    import docker

    uid, gid = _owner(output)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, path in files.items():
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid, info.gid, info.mode = uid, gid, 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    engine = docker.from_env()
    image = os.environ.get("SENTCLF_SCORE_IMAGE") or score_image()  # this checkout's
    helper = engine.containers.create(
        image,
        ["true"],
        volumes={str(output): {"bind": "/out", "mode": "rw"}},
        labels={"sentclf.managed": "score"},
    )
    try:
        if not helper.put_archive("/out", archive.getvalue()):
            raise RuntimeError(f"the engine did not write {output}")
    finally:
        helper.remove(force=True)
    if (uid, gid) != (0, 0):
        logger.info("wrote %s (owned by %d:%d)", output, uid, gid)
