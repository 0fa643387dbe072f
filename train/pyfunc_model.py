"""The registered model: a text-level MLflow pyfunc (sentclf.text_model.TextModel) that holds the ONNX graph,
the tokenizer and the serving config (max_seq_length, the label names in class order).

Its signature is `text` (string) -> `class` (long), `name` (string), `probabilities` (float array), so every
MLflow tool that takes a model URI takes sentences: `mlflow.pyfunc.load_model(uri).predict([...])`,
`mlflow models predict|serve`, `mlflow.pyfunc.spark_udf`. ONNX Runtime underneath; loading it needs
onnxruntime, tokenizers, numpy and pandas (its pip requirements), never PyTorch. The server image is built
from the same three files (artifacts/model.onnx, artifacts/tokenizer.json, artifacts/serving_config.json).
"""

import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime
import pandas as pd
import tokenizers
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

import sentclf
import sentclf_runtime
from sentclf.text_model import ARTIFACT_KEYS, TEXT_COLUMN, TextModel
from sentclf_runtime.config import ServingConfig
from sentclf_runtime.pairs import pair_input

EXAMPLE_SENTENCES = ["The cat sat on the mat.", "Cat the mat on sat the."]


def text_signature() -> ModelSignature:
    """One string column in. Unnamed on purpose: MLflow 3.17 enforces a named column by name, so a plain
    list of sentences (`predict([...])`, `{"inputs": [...]}`) would be refused as column `0`; unnamed, a
    list, a Series, a one-column frame and a frame with a `text` column (the one the model reads) all
    pass, and spark_udf hands the column over by position."""
    inputs = Schema([ColSpec(DataType.string)])
    outputs = Schema(
        [
            ColSpec(DataType.long, "class"),
            ColSpec(DataType.string, "name"),
            ColSpec(Array(DataType.float), "probabilities"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def pair_signature(second: str) -> ModelSignature:
    """A sentence-pair model's input: two named string columns, `text` and the second input's name (the
    serving config's `text_pair_input`); the outputs are a single-sentence model's."""
    inputs = Schema([ColSpec(DataType.string, TEXT_COLUMN), ColSpec(DataType.string, second)])
    return ModelSignature(inputs=inputs, outputs=text_signature().outputs)


def pip_requirements() -> list[str]:
    return [
        f"mlflow=={mlflow.__version__}",
        f"onnxruntime=={onnxruntime.__version__}",
        f"tokenizers=={tokenizers.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
    ]


def log_text_model(
    onnx_path: Path,
    tokenizer_json: Path,
    serving_config: Path,
    registered_model_name: str | None = None,
    name: str = "model",
) -> ModelInfo:
    """Log (and register, given a name) the pyfunc of these three files in the active run. Its code is the
    pyfunc module (a minimal `sentclf` package) and the model's runtime (`sentclf_runtime`, the server's
    scorer), so the model loads without this project installed."""
    files = {"model.onnx": onnx_path, "tokenizer.json": tokenizer_json, "serving_config.json": serving_config}
    second = pair_input(ServingConfig.read(serving_config))
    signature = text_signature() if second is None else pair_signature(second)
    example = {TEXT_COLUMN: EXAMPLE_SENTENCES} | ({} if second is None else {second: EXAMPLE_SENTENCES[::-1]})
    with tempfile.TemporaryDirectory(prefix="sentclf-pyfunc-") as tmp:
        package = Path(tmp) / "sentclf"
        package.mkdir()
        source = Path(sentclf.__file__).parent
        shutil.copy2(source / "__init__.py", package / "__init__.py")
        shutil.copy2(source / "text_model.py", package / "text_model.py")
        runtime = Path(tmp) / "sentclf_runtime"
        shutil.copytree(
            Path(sentclf_runtime.__file__).parent, runtime, ignore=shutil.ignore_patterns("__pycache__")
        )
        artifacts = {}
        for plain, path in files.items():  # the files under their plain names, whatever they were called
            target = Path(tmp) / "files" / plain
            target.parent.mkdir(exist_ok=True)
            shutil.copy2(path, target)
            artifacts[ARTIFACT_KEYS[plain]] = str(target)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=TextModel(),
            artifacts=artifacts,
            code_paths=[str(package), str(runtime)],
            signature=signature,
            input_example=pd.DataFrame(example),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
        )
