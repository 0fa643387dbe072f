"""Reading the splits a preprocess run logged, checked against the schema."""

import tempfile

import pandas as pd

from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, split_artifact_path
from sentclf.tracking import StepInputError, download_artifacts


def read_split(run_id: str, split: str) -> pd.DataFrame:
    """One split (train / validation / test) of preprocess run `run_id`, as sentence + label columns."""
    with tempfile.TemporaryDirectory(prefix="sentclf-data-") as tmp:
        path = download_artifacts(run_id, split_artifact_path(split), tmp)
        frame = pd.read_parquet(path)
    missing = {TEXT_COLUMN, LABEL_COLUMN} - set(frame.columns)
    if missing:
        raise StepInputError(f"split {split} of run {run_id} lacks column(s) {sorted(missing)}")
    if frame.empty:
        raise StepInputError(f"split {split} of run {run_id} is empty")
    return frame[[TEXT_COLUMN, LABEL_COLUMN]].reset_index(drop=True)
