"""The data contract between steps: column names, split names, the label set, and the names (aliases,
tags, artifact paths) more than one room reads or writes.

The label set is data, not code: preprocess derives it from the labelled files (or takes it from
`-P labels=...`), stores every split's `label` column as the class index 0..N-1, and records the classes
in `schema.json` and the run tag `label_names`. Every later room reads it from there (train's head size
and `id2label`, metrics, plots, the serving config, the server's outputs, the report, drift). CoLA's own
names below are only the names of the shipped CoLA data set's two classes.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass

TEXT_COLUMN = "sentence"
LABEL_COLUMN = "label"
SPLITS = ("train", "validation", "test")
# The shipped CoLA files' classes, by their 0/1 value: the only place CoLA's label names are written.
COLA_LABEL_NAMES = ("unacceptable", "acceptable")
MIN_CLASSES, MAX_CLASSES = 2, 200

# Artifact paths inside a preprocess run.
DATA_ARTIFACT_DIR = "data"
SCHEMA_ARTIFACT = "schema.json"
DATA_SUFFIXES = (".tsv", ".csv", ".parquet", ".jsonl")

# Tags written by one step and read by another (or by the conductor).
LABEL_NAMES_TAG = "label_names"  # preprocess run and model version: the class names in order, as JSON
MODEL_VERSION_TAG = "registered_model_version"  # train run: the version it registered
SERVER_IMAGE_TAG = "server_image"  # building run and model version: the server image of that version
SERVED_NAME_TAG = "served_model_name"  # building run and model version: the name its server answers to
TRAIN_RUN_TAG = "train_run_id"  # model version: the run that trained it
PRECISION_USED_TAG = "precision_used"  # train run: the precision that ran (bf16|fp32), not the one asked
# preprocess run (sentclf.tracking.record_inputs, prefix `input.`): the data's name, the sha256 of its
# manifest (host files and the shipped CoLA; none for hub data) and the snapshot's URI (host files only).
DATASET_TAG = "input.dataset"
DATASET_SHA256_TAG = "input.dataset_sha256"
DATASET_SNAPSHOT_TAG = "input.dataset_snapshot"
GATE_DECISION_TAG = "gate.decision"  # evaluate run and pipeline run: `promoted` or `kept`
GATE_SUMMARY_TAG = "gate.summary"  # evaluate run: the gate's one-line decision and its reasons

# The gate's metric on the test rows, with its 95% interval: evaluate logs them, the pipeline run copies them.
GATE_METRIC = "test_mcc"
GATE_METRIC_LOW, GATE_METRIC_HIGH = f"{GATE_METRIC}_low", f"{GATE_METRIC}_high"
# The pipeline (parent) run's headline besides those, as metrics the run list can show as columns and sort
# by: the version it registered and whether the gate promoted it (1) or kept the champion (0). Read by the
# docs and whoever compares pipelines, not by a step.
HEADLINE_VERSION_METRIC = "registered_model_version"
HEADLINE_PROMOTED_METRIC = "gate_promoted"

# Registry aliases: train sets `challenger` on each new version; only evaluate's gate moves `champion`.
CHALLENGER_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class LabelSet:
    """The classes of a data set, in class-index order: `names[i]` is what index i means to a person,
    `values[i]` the value the data's label column held for it (an int or a string)."""

    names: tuple[str, ...]
    values: tuple[int | str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.values):
            raise ValueError(f"{len(self.names)} class names for {len(self.values)} label values")
        if not MIN_CLASSES <= len(self.names) <= MAX_CLASSES:
            raise ValueError(
                f"{len(self.names)} classes: between {MIN_CLASSES} and {MAX_CLASSES} are supported"
            )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"class names repeat: {list(self.names)}")

    @classmethod
    def from_values(cls, values: Sequence[int | str], names: Sequence[str] | None = None) -> "LabelSet":
        """Classes named by their values (`str(value)`) unless `names` are given."""
        return cls(tuple(names) if names is not None else tuple(str(v) for v in values), tuple(values))

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def is_binary(self) -> bool:
        return len(self.names) == 2

    def index_of(self) -> dict[int | str, int]:
        """label value -> class index."""
        return {value: index for index, value in enumerate(self.values)}

    def as_dict(self) -> dict:
        return {"names": list(self.names), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSet":
        return cls(tuple(data["names"]), tuple(data["values"]))

    def names_json(self) -> str:
        """The value of the LABEL_NAMES_TAG tag."""
        return json.dumps(list(self.names))


COLA_LABELS = LabelSet(COLA_LABEL_NAMES, (0, 1))


def label_names_from_tag(value: str) -> tuple[str, ...]:
    """The class names a LABEL_NAMES_TAG tag holds."""
    names = json.loads(value)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"tag {LABEL_NAMES_TAG} is not a JSON list of names: {value[:80]!r}")
    return tuple(names)


def split_artifact_path(split: str) -> str:
    """Artifact path of one split's parquet file inside a preprocess run."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return f"{DATA_ARTIFACT_DIR}/{split}.parquet"
