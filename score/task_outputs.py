"""What `score` writes beyond class, name and probabilities for the version it scores: a multi-label
version (its serving_config.json says `label_mode: multi`) adds each row's decided label names, as the
server's `label_set` answers them, and one probability column per label named after it.

The driver reads the version's serving config once, before Spark starts, to ask the pyfunc's UDF for its
`label_set` column too (spark_udf returns only the fields its result type names); the pyfunc itself decides
the sets with the runtime's per-label thresholds, so a row gets the set the server gives it.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa

from sentclf.text_model import LABEL_SET_COLUMN
from sentclf.tracking import StepInputError
from sentclf_runtime.config import FILE_NAME, ServingConfig
from sentclf_runtime.files import ONNX_FLAVOR_FILES, PYFUNC_FILES

__all__ = [  # ServingConfig too: the type score.py's functions take
    "BASE_RESULT_TYPE",
    "ServingConfig",
    "label_metrics",
    "output_fields",
    "prediction_fields",
    "result_type",
    "version_config",
    "with_label_columns",
]

BASE_RESULT_TYPE = "struct<class: bigint, name: string, probabilities: array<float>>"
MULTI_LABEL_RESULT_TYPE = BASE_RESULT_TYPE[:-1] + f", {LABEL_SET_COLUMN}: string>"
# A multi-label version's per-label columns: `probability_<label name>` (the name as it is; Parquet takes
# any string), beside the `probabilities` array in label order.
PROBABILITY_PREFIX = "probability_"


def version_config(model_uri: str) -> ServingConfig:
    """The serving config of a registered version (models:/name/version), from either layout it was
    logged in; a version logged before configs named their labels reads as the default."""
    with tempfile.TemporaryDirectory(prefix="sentclf-score-config-") as tmp:
        for relative in (PYFUNC_FILES[FILE_NAME], ONNX_FLAVOR_FILES[FILE_NAME]):
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{model_uri}/{relative}", dst_path=tmp
                )
            except mlflow.exceptions.MlflowException:
                continue
            return ServingConfig.read(Path(local))
    raise StepInputError(f"model={model_uri} holds no {FILE_NAME}: was it logged by the train step?")


def result_type(config: ServingConfig) -> str:
    """The pyfunc UDF's result type: a multi-label version's adds the label set (a JSON list per row)."""
    return MULTI_LABEL_RESULT_TYPE if config.multi_label else BASE_RESULT_TYPE


def prediction_fields(config: ServingConfig) -> list[str]:
    """The UDF result's fields score keeps, in the output's order."""
    return ["class", "name", "probabilities"] + ([LABEL_SET_COLUMN] if config.multi_label else [])


def probability_column(label: str) -> str:
    return f"{PROBABILITY_PREFIX}{label}"


def with_label_columns(scored: pd.DataFrame, config: ServingConfig) -> pd.DataFrame:
    """A multi-label version's rows: `label_set` as a list of names (from the pyfunc's JSON list) and one
    probability column per label; a single-label version's rows as they are."""
    if not config.multi_label:
        return scored
    probabilities = scored["probabilities"].tolist()
    per_label = {
        probability_column(label): [float(row[j]) for row in probabilities]
        for j, label in enumerate(config.labels)
    }
    return scored.assign(**{LABEL_SET_COLUMN: scored[LABEL_SET_COLUMN].map(json.loads)}).assign(**per_label)


def output_fields(config: ServingConfig) -> list[tuple[str, pa.DataType]]:
    """The Parquet fields after text (and text_pair): class, name, probabilities, and a multi-label
    version's label_set (list of strings) and per-label probabilities (float32)."""
    fields = [("class", pa.int64()), ("name", pa.string()), ("probabilities", pa.list_(pa.float32()))]
    if config.multi_label:
        fields.append((LABEL_SET_COLUMN, pa.list_(pa.string())))
        fields += [(probability_column(label), pa.float32()) for label in config.labels]
    return fields


def label_metrics(scored: pd.DataFrame, config: ServingConfig) -> dict[str, int]:
    """A multi-label version's counts: rows whose set holds each label, and rows with an empty set."""
    if not config.multi_label:
        return {}
    sets = scored[LABEL_SET_COLUMN]
    counts = {
        f"rows_label_{re.sub(r'[^0-9A-Za-z_.-]+', '_', label)}": int(
            sets.map(lambda s, n=label: n in s).sum()
        )
        for label in config.labels
    }
    return counts | {"rows_empty_label_set": int(sets.map(len).eq(0).sum())}
