"""Where a registered version's three files sit once downloaded. Two layouts carry them:

- the text-level pyfunc (versions registered since the pyfunc): `artifacts/model.onnx`,
  `artifacts/tokenizer.json`, `artifacts/serving_config.json`, and its code under `code/`;
- the `onnx` flavor of earlier versions: `model.onnx`, `extra_files/tokenizer.json`,
  `extra_files/serving_config.json`.

A folder of the three files under their plain names (a server image's /models/model) is a third.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_FILE_NAMES = ("model.onnx", "tokenizer.json", "serving_config.json")
PLAIN_FILES = {name: name for name in MODEL_FILE_NAMES}
PYFUNC_FILES = {name: f"artifacts/{name}" for name in MODEL_FILE_NAMES}
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


def model_files(model_dir: str | os.PathLike) -> dict[str, Path]:
    """The three files of a folder (plain names) or a downloaded version (either layout), by plain name."""
    root = Path(model_dir)
    for layout in (PLAIN_FILES, PYFUNC_FILES, ONNX_FLAVOR_FILES):
        files = {name: root / relative for name, relative in layout.items()}
        if all(path.is_file() for path in files.values()):
            return files
    raise FileNotFoundError(
        f"{root} holds neither model.onnx, tokenizer.json and serving_config.json, nor the pyfunc's "
        "artifacts/, nor the onnx flavor's model.onnx + extra_files/: was it logged by the train step?"
    )
