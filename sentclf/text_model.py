"""The text-level pyfunc: sentences in, class index, class name and per-class probabilities out, with the
model's runtime (`sentclf_runtime`: ONNX Runtime and the tokenizer) in this process, no PyTorch, no server.

What `mlflow.pyfunc.load_model`, `mlflow models predict|serve` and `mlflow.pyfunc.spark_udf` run
(`TextModel`), and the frame-shaped face of the runtime's scorer for the evaluate step's offline reference,
the monitor's test-time behaviour and the benches (`TextClassifier`). The scoring itself is the runtime's
`Scorer`, the very code the inference server runs.

This module imports only numpy, pandas and the runtime (and mlflow for the pyfunc class): the pyfunc ships
it and `sentclf_runtime` as its code, so a model loads wherever those are installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sentclf_runtime.config import ServingConfig
from sentclf_runtime.files import ARTIFACT_KEYS, ONNX_FLAVOR_FILES, PYFUNC_FILES, model_files
from sentclf_runtime.multilabel import label_set_json, label_sets
from sentclf_runtime.pairs import check_pairs, pair_input, split_items
from sentclf_runtime.scorer import Scorer, ScorerOptions, softmax

try:  # the pyfunc's base class; the scorer alone needs no MLflow
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - MLflow is everywhere this runs
    PythonModel = object

__all__ = [
    "ARTIFACT_KEYS",
    "ONNX_FLAVOR_FILES",
    "PYFUNC_FILES",
    "Scores",
    "TextClassifier",
    "TextModel",
    "model_files",
    "softmax",
    "pairs_of",
    "texts_of",
]

TEXT_COLUMN = "text"
OUTPUT_COLUMNS = ("class", "name", "probabilities")
# A multi-label model's frame adds each text's decided label names, as the server's `label_set` output.
LABEL_SET_COLUMN = "label_set"
# Rows in one ORT call in process: larger than the server's (no caller waits on a batch here).
BATCH = 64
THREADS_ENV = "SENTCLF_ORT_THREADS"


@dataclass(frozen=True)
class Scores:
    labels: np.ndarray  # int64 [n]
    probabilities: np.ndarray  # float32 [n, classes]
    names: list[str] | None = None  # the class names of `labels`


class TextClassifier:
    """The runtime's scorer with the pyfunc's defaults: texts -> Scores or the pyfunc's frame."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.config = scorer.config
        self.labels = list(scorer.labels)

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, threads: int | None = None) -> TextClassifier:
        """From a downloaded version (either layout) or a folder of the three plain files."""
        return cls(Scorer.from_dir(model_dir, _options(threads)))

    @classmethod
    def from_files(cls, files: dict[str, str | os.PathLike], threads: int | None = None) -> TextClassifier:
        config = ServingConfig.read(files["serving_config.json"])
        return cls(Scorer(files["model.onnx"], files["tokenizer.json"], config, _options(threads)))

    @property
    def pair_input(self) -> str | None:
        """The second input's name of a sentence-pair model (sentclf_runtime.pairs); None: single."""
        return pair_input(self.config)

    def probabilities(self, texts: list[str], text_pairs: list[str] | None = None) -> np.ndarray:
        """Float32 probabilities [n, classes] in input order; a pairs model takes `text_pairs` too, or
        `texts` as (text, text_pair) tuples."""
        if text_pairs is None:
            texts, text_pairs = split_items(texts)
        check_pairs(self.config, texts, text_pairs, TEXT_COLUMN)
        if text_pairs is None:
            return self.scorer.predict(texts)
        return self.scorer.predict(texts, text_pairs)

    def score(self, texts: list[str], text_pairs: list[str] | None = None) -> Scores:
        probabilities = self.probabilities(texts, text_pairs)
        labels = probabilities.argmax(axis=1).astype(np.int64)
        return Scores(labels, probabilities, [self.labels[i] for i in labels])

    def label_sets(self, probabilities: np.ndarray) -> list[list[str]]:
        """A multi-label model's decided label names per text (its per-label thresholds)."""
        return label_sets(probabilities, self.labels, self.config.label_thresholds())

    def frame(self, texts: list[str], text_pairs: list[str] | None = None) -> pd.DataFrame:
        """class (int64), name (str), probabilities (float32 arrays): the pyfunc's output; a multi-label
        model's adds label_set (a JSON list of the decided names; class/name are the most probable)."""
        scores = self.score(texts, text_pairs)
        frame = pd.DataFrame(
            {"class": scores.labels, "name": scores.names, "probabilities": list(scores.probabilities)}
        )
        if self.config.multi_label:
            frame[LABEL_SET_COLUMN] = [
                label_set_json(chosen) for chosen in self.label_sets(scores.probabilities)
            ]
        return frame


def _options(threads: int | None) -> ScorerOptions:
    return ScorerOptions(max_batch_size=BATCH, intra_op_threads=threads or 0)


def texts_of(model_input) -> list[str]:
    """A list of strings, a Series, a numpy array or a DataFrame with a `text` column (or one column)."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(f"expected a `{TEXT_COLUMN}` column, got columns {list(model_input.columns)}")
        return ["" if value is None else str(value) for value in column.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        return texts_of(pd.DataFrame({TEXT_COLUMN: list(np.atleast_1d(model_input[TEXT_COLUMN]))}))
    return [str(value) for value in list(model_input)]


def pairs_of(model_input, second: str) -> tuple[list[str], list[str]]:
    """A pairs model's input: a DataFrame (or a dict of lists) with the `text` column and the `second`
    column (the serving config's second input), or a list of (text, text_pair) rows."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame({key: list(np.atleast_1d(value)) for key, value in model_input.items()})
    if not isinstance(model_input, pd.DataFrame):
        model_input = pd.DataFrame(list(model_input), columns=[TEXT_COLUMN, second])
    missing = [name for name in (TEXT_COLUMN, second) if name not in model_input.columns]
    if missing:
        raise ValueError(
            f"this model reads sentence pairs: expected columns `{TEXT_COLUMN}` and `{second}`, missing "
            f"{missing} (got {list(model_input.columns)})"
        )
    texts, pairs = (
        ["" if value is None else str(value) for value in model_input[name].tolist()]
        for name in (TEXT_COLUMN, second)
    )
    return texts, pairs


class TextModel(PythonModel):
    """The registered pyfunc: `text` (string) -> `class`, `name`, `probabilities`."""

    def load_context(self, context) -> None:
        files = {name: Path(context.artifacts[key]) for name, key in ARTIFACT_KEYS.items()}
        threads = int(os.environ.get(THREADS_ENV, "0")) or None
        self.classifier = TextClassifier.from_files(files, threads)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        second = self.classifier.pair_input
        if second is not None:
            return self.classifier.frame(*pairs_of(model_input, second))
        return self.classifier.frame(texts_of(model_input))
