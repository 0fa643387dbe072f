"""Reading the splits a preprocess run logged, checked against the schema."""

import json
import tempfile
from pathlib import Path

import pandas as pd

from sentclf.schema import (
    COLA_LABELS,
    LABEL_COLUMN,
    SCHEMA_ARTIFACT,
    TEXT_COLUMN,
    LabelSet,
    split_artifact_path,
)
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


def read_label_set(run_id: str) -> LabelSet:
    """The label set a preprocess run recorded (schema.json's `label_set`); a run from before label sets
    were data (no `label_set` key) had CoLA's two classes."""
    with tempfile.TemporaryDirectory(prefix="sentclf-schema-") as tmp:
        path = download_artifacts(run_id, SCHEMA_ARTIFACT, tmp)
        schema = json.loads(Path(path).read_text())
    if "label_set" not in schema:
        return COLA_LABELS
    try:
        return LabelSet.from_dict(schema["label_set"])
    except (KeyError, TypeError, ValueError) as error:
        raise StepInputError(f"run {run_id}: {SCHEMA_ARTIFACT} has no valid label set ({error})") from None
