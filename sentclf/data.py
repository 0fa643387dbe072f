"""Reading the splits a preprocess run logged, checked against the schema."""

import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import mlflow
import pandas as pd

from sentclf.schema import (
    COLA_LABELS,
    LABEL_COLUMN,
    SCHEMA_ARTIFACT,
    SLICE_COLUMNS_KEY,
    TEXT_COLUMN,
    LabelSet,
    split_artifact_path,
)
from sentclf.tracking import StepInputError, download_artifacts


def read_split(
    run_id: str, split: str, extra_columns: Sequence[str] = (), allow_empty: bool = False
) -> pd.DataFrame:
    """One split (train / validation / test) of preprocess run `run_id`, as sentence + label columns, and
    the `extra_columns` (slice columns, see read_slice_columns) it has. `allow_empty`: a few-shot data
    set's validation split is empty (preprocess held none out), which the train step handles."""
    with tempfile.TemporaryDirectory(prefix="sentclf-data-") as tmp:
        path = download_artifacts(run_id, split_artifact_path(split), tmp)
        frame = pd.read_parquet(path)
    missing = {TEXT_COLUMN, LABEL_COLUMN} - set(frame.columns)
    if missing:
        raise StepInputError(f"split {split} of run {run_id} lacks column(s) {sorted(missing)}")
    if frame.empty and not allow_empty:
        raise StepInputError(f"split {split} of run {run_id} is empty")
    kept = [name for name in extra_columns if name in frame.columns]
    return frame[[TEXT_COLUMN, LABEL_COLUMN, *kept]].reset_index(drop=True)


def read_schema(run_id: str) -> dict:
    """schema.json of preprocess run `run_id`."""
    with tempfile.TemporaryDirectory(prefix="sentclf-schema-") as tmp:
        path = download_artifacts(run_id, SCHEMA_ARTIFACT, tmp)
        return json.loads(Path(path).read_text())


def read_slice_columns(run_id: str) -> tuple[str, ...]:
    """The slice columns a preprocess run kept in its splits (none for a run from before they were)."""
    names = read_schema(run_id).get(SLICE_COLUMNS_KEY, [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise StepInputError(f"run {run_id}: {SCHEMA_ARTIFACT}'s {SLICE_COLUMNS_KEY} is not a list of names")
    return tuple(names)


def read_label_set(run_id: str) -> LabelSet:
    """The label set a preprocess run recorded (schema.json's `label_set`); a run from before label sets
    were data (no `label_set` key) had CoLA's two classes."""
    schema = read_schema(run_id)
    if "label_set" not in schema:
        return COLA_LABELS
    try:
        return LabelSet.from_dict(schema["label_set"])
    except (KeyError, TypeError, ValueError) as error:
        raise StepInputError(f"run {run_id}: {SCHEMA_ARTIFACT} has no valid label set ({error})") from None


def log_split_inputs(run_id: str, splits: dict[str, pd.DataFrame]) -> None:
    """The splits this run read from preprocess run `run_id`, as its MLflow dataset inputs (the UI's
    Datasets column, and lineage past preprocess): each named by its split, its source the artifact (where
    MLflow can name it as a dataset source: a local store's path; else the code that read it)."""
    artifact_uri = mlflow.get_run(run_id).info.artifact_uri
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        warnings.filterwarnings("ignore", message="Starting with pandas version 4.0")
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        for split, frame in splits.items():
            columns = frame[[TEXT_COLUMN, LABEL_COLUMN]]
            try:
                dataset = mlflow.data.from_pandas(
                    columns,
                    source=f"{artifact_uri}/{split_artifact_path(split)}",
                    name=split,
                    targets=LABEL_COLUMN,
                )
            except mlflow.exceptions.MlflowException:  # a source type MLflow has no resolver for
                dataset = mlflow.data.from_pandas(columns, name=split, targets=LABEL_COLUMN)
            mlflow.log_input(dataset, context=split)
