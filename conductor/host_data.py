"""Which host file or folder a pipeline's `dataset` parameter names. The conductor snapshots it into the
parent run (sentclf.dataset_snapshot) and hands preprocess the snapshot's URI, so every backend reads the
same bytes through MLflow."""

from pathlib import Path


def host_data_path(dataset: str, roots: tuple[Path, ...]) -> Path | None:
    """The existing host file or folder `dataset` names (absolute, or relative to one of `roots`, in
    order), or None: `cola`, a hub id, a snapshot URI, or a path that does not exist (the preprocess
    step then says so, with the places it looked)."""
    if dataset == "cola" or "://" in dataset or ":/" in dataset:
        return None
    given = Path(dataset).expanduser()
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    return next((path.resolve() for path in candidates if path.exists()), None)
