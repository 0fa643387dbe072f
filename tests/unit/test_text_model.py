"""The registered text model: a pyfunc that takes sentences (list or DataFrame) and answers class, name and
probabilities with ONNX Runtime, loadable without PyTorch; earlier onnx-flavor versions still read by the
same scorer. Tiny ONNX models and tokenizers in a temporary store."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.onnx
import numpy as np
import onnx
import pandas as pd
import pytest

from sentclf import text_model
from sentclf.text_model import TextClassifier, model_files
from sentclf_runtime import scorer
from tests.conftest import REPO_ROOT
from tests.unit.test_evaluate import MAX_SEQ_LENGTH, MEDIOCRE, sample_rows, threshold_model, tokenizer_file

import offline
from pyfunc_model import log_text_model

LABELS = ["unacceptable", "acceptable"]


def text_model_files(directory: Path, threshold: float = MEDIOCRE) -> tuple[Path, Path, Path]:
    """model.onnx, tokenizer.json and serving_config.json of a tiny threshold classifier."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / "model.onnx"
    onnx.save(threshold_model(threshold), str(onnx_path))
    config = directory / "serving_config.json"
    config.write_text(json.dumps({"model_name": "cola", "max_seq_length": MAX_SEQ_LENGTH, "labels": LABELS}))
    return onnx_path, tokenizer_file(directory / "tokenizer.json"), config


def register_text_model(name: str, directory: Path, threshold: float = MEDIOCRE) -> str:
    """A version of `name` logged as the train step logs one; returns the version."""
    with mlflow.start_run():
        info = log_text_model(*text_model_files(directory, threshold), registered_model_name=name)
    return str(info.registered_model_version)


def test_the_registered_model_takes_sentences_as_a_list_or_a_frame(tracking_store, tmp_path):
    version = register_text_model("texts", tmp_path / "files")
    texts, _ = sample_rows(40)
    model = mlflow.pyfunc.load_model(f"models:/texts/{version}")
    from_list = model.predict(texts)
    from_frame = model.predict(pd.DataFrame({"text": texts}))
    assert list(from_list.columns) == ["class", "name", "probabilities"]
    pd.testing.assert_frame_equal(from_list, from_frame)
    reference = TextClassifier.from_dir(tmp_path / "files").score(texts)
    assert from_list["class"].tolist() == reference.labels.tolist()
    assert from_list["name"].tolist() == [LABELS[i] for i in reference.labels]
    probabilities = np.stack(from_list["probabilities"].to_numpy())
    assert np.abs(probabilities - reference.probabilities).max() == 0
    assert set(from_list["class"]) == {0, 1}  # a mediocre model, but both classes
    info = mlflow.models.get_model_info(f"models:/texts/{version}")
    assert info.signature.inputs.to_dict() == [{"type": "string", "required": True}]
    assert info.signature.outputs.input_names() == ["class", "name", "probabilities"]
    assert set(info.flavors) == {"python_function"}


def test_batches_of_similar_length_answer_each_sentence_in_input_order(tmp_path, monkeypatch):
    """Sorted by length within windows, batched, put back: every sentence gets the answer it gets alone."""
    monkeypatch.setattr(scorer, "SORT_WINDOW", 50)
    monkeypatch.setattr(text_model, "BATCH", 8)
    texts, _ = sample_rows(130)
    texts = [" ".join([text] * (1 + i % 4)) for i, text in enumerate(texts)]  # 6 to 24 words, mixed
    classifier = TextClassifier.from_dir(text_model_files(tmp_path)[0].parent)
    together = classifier.probabilities(texts)
    alone = np.concatenate([classifier.probabilities([text]) for text in texts])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    assert len(set(np.round(together[:, 1], 4))) > 20  # the sentences' answers differ: order matters
    assert classifier.probabilities([]).shape == (0, 2)


def test_it_loads_without_pytorch_and_with_its_own_code(tracking_store, tmp_path):
    """In a fresh interpreter where `import torch` fails and this checkout's sentclf is not on the path."""
    version = register_text_model("texts", tmp_path / "files")
    uri = f"models:/texts/{version}"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "m")))
    requirements = (local / "requirements.txt").read_text()
    assert "torch" not in requirements and "onnxruntime==" in requirements and "tokenizers==" in requirements
    code = sorted(p.name for p in (local / "code" / "sentclf").glob("*.py"))
    assert code == ["__init__.py", "text_model.py"]
    runtime = sorted(p.name for p in (local / "code" / "sentclf_runtime").glob("*.py"))
    assert "scorer.py" in runtime and "__pycache__" not in runtime
    script = (
        "import sys; sys.modules['torch'] = None; sys.path = [p for p in sys.path if p not in ('', "
        f"{str(REPO_ROOT)!r})]; import mlflow.pyfunc; "
        f"m = mlflow.pyfunc.load_model({str(local)!r}); print(m.predict(['good1 good2 good3'])['name'][0]); "
        "import sentclf, sentclf_runtime; print(sentclf.__file__); print(sentclf_runtime.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    name, sentclf_file, runtime_file = result.stdout.split()[-3:]
    assert name in LABELS
    assert sentclf_file.startswith(str(local)) and runtime_file.startswith(str(local))


def test_an_earlier_onnx_flavor_version_still_scores(tracking_store, tmp_path):
    onnx_path, tokenizer, config = text_model_files(tmp_path / "files")
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            registered_model_name="old",
            extra_files=[str(tokenizer), str(config)],
        )
    texts, _ = sample_rows(20)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/old/{info.registered_model_version}"))
    assert model_files(local)["tokenizer.json"] == local / "extra_files" / "tokenizer.json"
    scores = offline.score_version("old", str(info.registered_model_version), texts)
    reference = TextClassifier.from_dir(tmp_path / "files").score(texts)
    assert scores.labels.tolist() == reference.labels.tolist()


def test_a_folder_without_the_model_files_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nor the pyfunc's artifacts"):
        model_files(tmp_path)
