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
    LABEL_MODE_KEY,
    SCHEMA_ARTIFACT,
    SLICE_COLUMNS_KEY,
    TEXT_COLUMN,
    TEXT_PAIR_COLUMN,
    TEXT_PAIR_KEY,
    LabelSet,
    split_artifact_path,
)
from sentclf.tracking import StepInputError, download_artifacts
from sentclf_runtime.multilabel import SINGLE_LABEL
from sentclf_runtime.pairs import joined_texts


def read_split(
    run_id: str, split: str, extra_columns: Sequence[str] = (), allow_empty: bool = False
) -> pd.DataFrame:
    """One split (train / validation / test) of preprocess run `run_id`, as sentence + label columns (and
    a sentence-pair task's text_pair), and the `extra_columns` (slice columns, read_slice_columns) it has.
    `allow_empty`: a few-shot data set's validation split is empty (preprocess held none out), which the
    train step handles."""
    with tempfile.TemporaryDirectory(prefix="sentclf-data-") as tmp:
        path = download_artifacts(run_id, split_artifact_path(split), tmp)
        frame = pd.read_parquet(path)
    missing = {TEXT_COLUMN, LABEL_COLUMN} - set(frame.columns)
    if missing:
        raise StepInputError(f"split {split} of run {run_id} lacks column(s) {sorted(missing)}")
    if frame.empty and not allow_empty:
        raise StepInputError(f"split {split} of run {run_id} is empty")
    kept = [name for name in extra_columns if name in frame.columns]
    pair = [TEXT_PAIR_COLUMN] if TEXT_PAIR_COLUMN in frame.columns else []
    return frame[[TEXT_COLUMN, *pair, LABEL_COLUMN, *kept]].reset_index(drop=True)


def model_inputs(frame: pd.DataFrame) -> tuple[list, list[str]]:
    """A split's rows as a model takes them (sentences, or (text, text_pair) tuples of a sentence-pair
    task, which sentclf.text_model scores as pairs), and as one text each (a pair joined as the server's
    capture joins it, sentclf_runtime.pairs)."""
    texts = frame[TEXT_COLUMN].tolist()
    if TEXT_PAIR_COLUMN not in frame.columns:
        return texts, texts
    pairs = frame[TEXT_PAIR_COLUMN].tolist()
    return list(zip(texts, pairs, strict=True)), joined_texts(texts, pairs)


def read_schema(run_id: str) -> dict:
    """schema.json of preprocess run `run_id`."""
    with tempfile.TemporaryDirectory(prefix="sentclf-schema-") as tmp:
        path = download_artifacts(run_id, SCHEMA_ARTIFACT, tmp)
        return json.loads(Path(path).read_text())


def read_text_pair_column(run_id: str) -> str | None:
    """The user's second text column of a sentence-pair task's preprocess run; None: single sentences."""
    name = read_schema(run_id).get(TEXT_PAIR_KEY)
    if name is not None and not isinstance(name, str):
        raise StepInputError(f"run {run_id}: {SCHEMA_ARTIFACT}'s {TEXT_PAIR_KEY} is not a column name")
    return name or None


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


def read_label_mode(run_id: str) -> str:
    """`multi` when the preprocess run recorded several labels per text (schema.json's label_mode), else
    `single` (every run from before label modes existed)."""
    return read_schema(run_id).get(LABEL_MODE_KEY, SINGLE_LABEL)


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
            if len(columns) and not pd.api.types.is_scalar(columns[LABEL_COLUMN].iloc[0]):
                # a multi-label split's lists of label indices: the digest needs scalars ("0|2")
                joined = ["|".join(map(str, row)) for row in columns[LABEL_COLUMN]]
                columns = columns.assign(**{LABEL_COLUMN: joined})
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
