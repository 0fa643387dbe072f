"""The text model: sentences in, class index, class name and per-class probabilities out, with ONNX Runtime
and the tokenizer in this process (no PyTorch, no server).

One scorer for every in-process use: the registered pyfunc (`TextModel`, what `mlflow.pyfunc.load_model`,
`mlflow models predict|serve` and `mlflow.pyfunc.spark_udf` run), the evaluate step's offline reference,
the monitor's test-time behaviour and the benches.

A registered version holds three files: the ONNX graph, `tokenizer.json` and `serving_config.json`
(`max_seq_length`, `labels`, ...). Two layouts carry them (`model_files`):

- the text-level pyfunc (versions registered since the pyfunc): `artifacts/model.onnx`,
  `artifacts/tokenizer.json`, `artifacts/serving_config.json`, and this module under `code/`;
- the `onnx` flavor of earlier versions: `model.onnx`, `extra_files/tokenizer.json`,
  `extra_files/serving_config.json`.

This module imports only numpy, pandas, onnxruntime and tokenizers (and mlflow for the pyfunc class): the
pyfunc ships it as its code, so a model loads wherever those are installed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

try:  # the pyfunc's base class; the scorer alone needs no MLflow
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - MLflow is everywhere this runs
    PythonModel = object

TEXT_COLUMN = "text"
OUTPUT_COLUMNS = ("class", "name", "probabilities")
BATCH = 64
# Sentences sorted by length together: large enough for batches of one length, small enough that the
# tokenizer's output for a million-sentence call is not held at once.
SORT_WINDOW = 4096
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Where each file sits in a registered version's model directory, per layout.
PYFUNC_FILES = {
    "model.onnx": "artifacts/model.onnx",
    "tokenizer.json": "artifacts/tokenizer.json",
    "serving_config.json": "artifacts/serving_config.json",
}
ONNX_FLAVOR_FILES = {
    "model.onnx": "model.onnx",
    "tokenizer.json": "extra_files/tokenizer.json",
    "serving_config.json": "extra_files/serving_config.json",
}
# The pyfunc's artifact keys (mlflow.pyfunc.log_model(artifacts=...)) for the three files.
ARTIFACT_KEYS = {
    "model.onnx": "model",
    "tokenizer.json": "tokenizer",
    "serving_config.json": "serving_config",
}


@dataclass(frozen=True)
class Scores:
    labels: np.ndarray  # int64 [n]
    probabilities: np.ndarray  # float32 [n, classes]
    names: list[str] | None = None  # the class names of `labels`


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def model_files(model_dir: str | os.PathLike) -> dict[str, Path]:
    """The three files of a downloaded registered version (either layout), by their plain names."""
    root = Path(model_dir)
    for layout in (PYFUNC_FILES, ONNX_FLAVOR_FILES):
        files = {name: root / relative for name, relative in layout.items()}
        if all(path.is_file() for path in files.values()):
            return files
    raise FileNotFoundError(
        f"{root} holds neither the pyfunc's artifacts/ nor the onnx flavor's model.onnx + extra_files/: "
        "was it logged by the train step?"
    )


class TextClassifier:
    """Tokenizer + ONNX Runtime session + class names: texts -> Scores, truncating and padding as the
    serving config says (as the server does)."""

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        tokenizer_path: str | os.PathLike,
        serving_config: dict,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = serving_config
        # The class names in class order; a config without them (before labels were data) names classes
        # by CoLA's two names where they fit, else by index.
        self.labels = [str(name) for name in serving_config.get("labels", ["unacceptable", "acceptable"])]
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=int(serving_config["max_seq_length"]))
        self.tokenizer.no_padding()  # padded per batch of similar lengths (`logits`)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs() if i.name in KNOWN_INPUTS]
        # The graph's class count (its logits' last dimension), whatever names the config gives.
        classes = self.session.get_outputs()[0].shape[-1]
        self.classes = classes if isinstance(classes, int) else len(self.labels)

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, threads: int | None = None) -> TextClassifier:
        """From a downloaded version (either layout) or a folder of the three plain files."""
        plain = Path(model_dir)
        files = (
            {name: plain / name for name in PYFUNC_FILES}
            if all((plain / name).is_file() for name in PYFUNC_FILES)
            else model_files(plain)
        )
        config = json.loads(files["serving_config.json"].read_text())
        return cls(files["model.onnx"], files["tokenizer.json"], config, threads)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Logits in input order. The sentences run in batches of similar length (sorted within windows of
        `SORT_WINDOW`, as the server's length buckets do), so a batch is padded to little more than its own
        sentences: on CoLA's 8551 training sentences 2.0x the sentences/s of batches in input order, the
        same labels, probabilities within 6e-8. The window bounds the tokenizer's output held at once."""
        logits = np.zeros((len(texts), self.classes), dtype=np.float32)
        for start in range(0, len(texts), SORT_WINDOW):
            logits[start : start + SORT_WINDOW] = self._window_logits(texts[start : start + SORT_WINDOW])
        return logits

    def _window_logits(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        logits = np.zeros((len(texts), self.classes), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            rows = order[start : start + BATCH]
            width = int(lengths[rows].max())
            columns = {
                "input_ids": np.full((len(rows), width), self.pad_id, dtype=np.int64),
                "attention_mask": np.zeros((len(rows), width), dtype=np.int64),
                "token_type_ids": np.zeros((len(rows), width), dtype=np.int64),
            }
            for row, index in enumerate(rows):
                encoding = encodings[index]
                n = len(encoding.ids)
                columns["input_ids"][row, :n] = encoding.ids
                columns["attention_mask"][row, :n] = encoding.attention_mask
                columns["token_type_ids"][row, :n] = encoding.type_ids
            logits[rows] = self.session.run(None, {name: columns[name] for name in self.inputs})[0]
        return logits

    def score(self, texts: list[str]) -> Scores:
        probabilities = softmax(self.logits(texts))
        labels = probabilities.argmax(axis=1).astype(np.int64)
        names = self.labels if len(self.labels) == probabilities.shape[1] else None
        return Scores(labels, probabilities, [names[i] if names else str(i) for i in labels])

    def frame(self, texts: list[str]) -> pd.DataFrame:
        """class (int64), name (str), probabilities (float32 arrays): the pyfunc's output."""
        scores = self.score(texts)
        return pd.DataFrame(
            {
                "class": scores.labels,
                "name": scores.names,
                "probabilities": list(scores.probabilities),
            }
        )


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


class TextModel(PythonModel):
    """The registered pyfunc: `text` (string) -> `class`, `name`, `probabilities`."""

    def load_context(self, context) -> None:
        files = {name: context.artifacts[key] for name, key in ARTIFACT_KEYS.items()}
        config = json.loads(Path(files["serving_config.json"]).read_text())
        threads = int(os.environ.get("SENTCLF_ORT_THREADS", "0")) or None
        self.classifier = TextClassifier(files["model.onnx"], files["tokenizer.json"], config, threads)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        return self.classifier.frame(texts_of(model_input))
