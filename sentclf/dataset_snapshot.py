"""A user's data, wherever it lives, enters the pipeline once, as an MLflow artifact with a manifest of
sha256 hashes.

The conductor (host side) snapshots a host file or folder into the parent run and hands preprocess a
`runs:/` URI, so every backend (local Docker, a tracking server, Kubernetes) reads the same bytes through
MLflow and the lineage names the original path and its hashes. A folder is where new batches land: its
supported files (top level) are read together. The manifest's overall hash is what the step cache keys
preprocess on, so a new batch retrains and an unchanged one does not.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import mlflow

from sentclf.schema import DATA_SUFFIXES

SUPPORTED_SUFFIXES = DATA_SUFFIXES
SNAPSHOT_DIR = "dataset"
MANIFEST = "manifest.json"
FILES_DIR = "files"


@dataclass(frozen=True)
class Manifest:
    """Where the data came from and what it was, byte for byte."""

    source: str  # the host path as given, made absolute
    kind: str  # file | directory
    files: tuple[tuple[str, str, int], ...]  # (name, sha256, bytes), sorted by name
    sha256: str  # over the names and hashes of all files

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "sha256": self.sha256,
            "files": [{"name": n, "sha256": h, "bytes": b} for n, h, b in self.files],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        files = tuple((f["name"], f["sha256"], int(f["bytes"])) for f in data["files"])
        return cls(data["source"], data["kind"], files, data["sha256"])


# The step that reads the data: a relative `dataset` path may be relative to its directory too.
DATA_STEP = "preprocess"


def locate_dataset(
    dataset: str, repo: Path, step_dir: Path | None = None, host_root: Path | None = None
) -> Path | None:
    """The existing file or folder `dataset` names, or None (`cola`, a hub id, a snapshot URI, or a path
    that does not exist: preprocess then says so). The one walk every room takes, host and container alike:
    an absolute path as given; a relative one from the repository root `repo`, then from the data step's
    directory `step_dir` (default `repo/preprocess`), where `preprocess/data/x.csv` also means `data/x.csv`.
    Inside a step's container (`host_root`, the host's root mounted read-only) host paths are read through
    the mount, and `step_dir` is the mounted step directory."""
    if dataset == "cola" or "://" in dataset or ":/" in dataset:
        return None
    step_dir = step_dir or repo / DATA_STEP
    given = Path(dataset).expanduser()
    if given.is_absolute():
        candidates = [given]
    else:
        candidates = [repo / given, step_dir / given]
        if given.parts and given.parts[0] == DATA_STEP:
            candidates.append(step_dir.joinpath(*given.parts[1:]))
    if host_root is not None and host_root.is_dir():
        # Not resolved there: a host symlink (absolute) would resolve to a path outside the mount.
        mounted = [
            host_root / c.relative_to("/") if c.is_absolute() and not c.is_relative_to(step_dir) else c
            for c in candidates
        ]
        return next((path for path in mounted if path.exists()), None)
    return next((path.resolve() for path in candidates if path.exists()), None)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_files(path: Path) -> list[Path]:
    """The file itself, or a folder's supported files (top level, no hidden ones), sorted."""
    if path.is_file():
        return [path]
    return sorted(
        child
        for child in path.iterdir()
        if child.is_file() and child.suffix.lower() in SUPPORTED_SUFFIXES and not child.name.startswith(".")
    )


def build_manifest(path: Path, source: str | None = None) -> Manifest:
    """Hash the data at `path` (a file or a folder); `source` is the name to record (default: path)."""
    files = tuple((f.name, file_sha256(f), f.stat().st_size) for f in data_files(path))
    overall = hashlib.sha256(json.dumps([f[:2] for f in files]).encode()).hexdigest()
    kind = "file" if path.is_file() else "directory"
    return Manifest(source or str(path), kind, files, overall)


def log_snapshot(path: Path, manifest: Manifest) -> str:
    """Log the files and the manifest to the active run; returns the `runs:/` URI of the snapshot."""
    run_id = mlflow.active_run().info.run_id
    for file in data_files(path):
        mlflow.log_artifact(str(file), f"{SNAPSHOT_DIR}/{FILES_DIR}")
    mlflow.log_dict(manifest.as_dict(), f"{SNAPSHOT_DIR}/{MANIFEST}")
    return f"runs:/{run_id}/{SNAPSHOT_DIR}"


def is_snapshot_uri(dataset: str) -> bool:
    return dataset.startswith("runs:/") and dataset.rstrip("/").endswith(f"/{SNAPSHOT_DIR}")


class SnapshotError(ValueError):
    """A snapshot is incomplete or its bytes do not match its manifest."""


def download_snapshot(uri: str, dst_dir: Path) -> tuple[Path, Manifest]:
    """Download a snapshot and check every file against the manifest. Returns (data path, manifest):
    the single file for a file snapshot, else the folder of files."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir)))
    manifest = Manifest.from_dict(json.loads((local / MANIFEST).read_text()))
    files_dir = local / FILES_DIR
    for name, sha256, _ in manifest.files:
        if not (files_dir / name).is_file():
            raise SnapshotError(f"snapshot {uri} lacks {name} (listed in its manifest)")
        if file_sha256(files_dir / name) != sha256:
            raise SnapshotError(f"snapshot {uri}: {name} does not match the sha256 in its manifest")
    if manifest.kind == "file":
        return files_dir / manifest.files[0][0], manifest
    return files_dir, manifest
