"""The data contract between steps: column names, split names, the label set, and the artifact paths of
the data.

The names runs and versions carry across rooms (tags, aliases, metric names) live in sentclf.contract.

The label set is data, not code: preprocess derives it from the labelled files (or takes it from
`-P labels=...`), stores every split's `label` column as the class index 0..N-1, and records the classes
in `schema.json` and the run tag `label_names`. Every later room reads it from there (train's head size
and `id2label`, metrics, plots, the serving config, the server's outputs, the report, drift). CoLA's own
names below are only the names of the shipped CoLA data set's two classes.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sentclf.contract import LABEL_NAMES_TAG

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
# schema.json's list of the splits' slice columns: kept from the user's files (preprocess's slice_columns,
# and CoLA's source column), stored as text beside sentence and label; evaluate scores the model per value.
SLICE_COLUMNS_KEY = "slice_columns"
# Sentence pairs (-P text_pair_column=...): the splits' second text column, and schema.json's key holding
# the user's name of it (absent or null: single sentences). Every later room reads the task kind there.
TEXT_PAIR_COLUMN = "text_pair"
TEXT_PAIR_KEY = "text_pair_column"
# schema.json's task kind: `multi` (several labels per text; each split's label is the list of the row's
# label indices) or absent (one class per text). The values are the runtime's (sentclf_runtime.multilabel).
LABEL_MODE_KEY = "label_mode"


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
