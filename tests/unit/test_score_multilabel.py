"""`score` with a multi-label version, without Spark: the driver reads the version's serving config, asks the
pyfunc UDF for `label_set` too, and scores.parquet holds each row's label names (the server's decision,
from the same per-label thresholds) and one probability column per label. The pyfunc's frame stands in
for the UDF's struct (spark_udf hands back the fields its result type names, nothing else)."""

import json
import sys

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sentclf.text_model import TextClassifier
from sentclf.tracking import StepInputError
from tests.conftest import REPO_ROOT
from tests.unit.test_evaluate import sample_rows
from tests.unit.test_text_model import text_model_files

from pyfunc_model import log_text_model

sys.path.insert(0, str(REPO_ROOT / "score"))
import score  # noqa: E402
import spark_io  # noqa: E402
import task_outputs  # noqa: E402

LABELS = ["billing", "login"]
THRESHOLDS = [0.6, 0.5]  # the tiny model's first logit is 0 (probability 0.5): billing is never on


@pytest.fixture(autouse=True)
def on_the_host(monkeypatch, tmp_path):
    monkeypatch.setattr(spark_io, "HOST_ROOT", tmp_path / "no-host-mount")


def register(name: str, directory, multi: bool) -> str:
    onnx_path, tokenizer, config = text_model_files(directory)
    if multi:
        data = json.loads(config.read_text()) | {
            "labels": LABELS,
            "label_mode": "multi",
            "thresholds": THRESHOLDS,
        }
        config.write_text(json.dumps(data))
    with mlflow.start_run():
        info = log_text_model(onnx_path, tokenizer, config, registered_model_name=name)
    return f"models:/{name}/{info.registered_model_version}"


def udf_rows(model_uri: str, texts: list[str], config) -> pd.DataFrame:
    """What score_frame collects from Spark before the label columns: text and the result's fields."""
    predicted = mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame({"text": texts}))
    return pd.concat(
        [pd.DataFrame({"text": texts}), predicted[task_outputs.prediction_fields(config)]], axis=1
    )


def test_a_multi_label_version_writes_its_label_sets_and_each_labels_probability(tracking_store, tmp_path):
    uri = register("tickets", tmp_path / "files", multi=True)
    config = task_outputs.version_config(uri)
    assert config.multi_label and list(config.thresholds) == THRESHOLDS
    assert task_outputs.result_type(config).endswith("probabilities: array<float>, label_set: string>")
    texts, _ = sample_rows(30)
    scored = task_outputs.with_label_columns(udf_rows(uri, texts, config), config)
    score.write_output(scored, tmp_path / "out", config)

    table = pq.read_table(tmp_path / "out" / score.OUTPUT_FILE)
    assert table.column_names == [
        "text", "class", "name", "probabilities", "label_set", "probability_billing", "probability_login"
    ]  # fmt: skip
    written = table.to_pandas()
    classifier = TextClassifier.from_dir(tmp_path / "files")
    probabilities = classifier.probabilities(texts)
    # The same sets as the server's (the runtime's label_sets at the version's thresholds).
    assert [list(s) for s in written["label_set"]] == classifier.label_sets(probabilities)
    for j, label in enumerate(LABELS):
        np.testing.assert_allclose(written[f"probability_{label}"], probabilities[:, j], rtol=0, atol=1e-7)
    on = written["label_set"].map(len)
    assert 0 < on.sum() < len(texts)  # some texts get login, some nothing
    metrics = task_outputs.label_metrics(scored, config)
    assert metrics == {
        "rows_label_billing": 0,
        "rows_label_login": int(on.sum()),
        "rows_empty_label_set": int((on == 0).sum()),
    }


def test_a_single_label_version_keeps_its_columns(tracking_store, tmp_path):
    uri = register("texts", tmp_path / "files", multi=False)
    config = task_outputs.version_config(uri)
    assert not config.multi_label and task_outputs.result_type(config) == score.RESULT_TYPE
    texts, _ = sample_rows(5)
    scored = task_outputs.with_label_columns(udf_rows(uri, texts, config), config)
    score.write_output(scored, tmp_path / "out", config)
    assert pq.read_table(tmp_path / "out" / score.OUTPUT_FILE).column_names == [
        "text", "class", "name", "probabilities"
    ]  # fmt: skip
    assert task_outputs.label_metrics(scored, config) == {}


def test_a_pair_versions_second_text_is_written_beside_the_first(tmp_path):
    scored = pd.DataFrame(
        {"text": ["a?"], "text_pair": ["b?"], "class": [1], "name": ["dup"], "probabilities": [[0.2, 0.8]]}
    )
    score.write_output(scored, tmp_path / "out")
    written = pq.read_table(tmp_path / "out" / score.OUTPUT_FILE)
    assert written.column_names == ["text", "text_pair", "class", "name", "probabilities"]
    assert written.to_pydict()["text_pair"] == ["b?"]


def test_an_earlier_onnx_flavor_versions_config_is_read_and_a_missing_one_named(tracking_store, tmp_path):
    import mlflow.onnx
    import onnx

    onnx_path, tokenizer, config = text_model_files(tmp_path / "files")
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            registered_model_name="old",
            extra_files=[str(tokenizer), str(config)],
        )
        bare = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="bare", registered_model_name="bare")
    old = task_outputs.version_config(f"models:/old/{info.registered_model_version}")
    assert old.labels == ("unacceptable", "acceptable") and not old.multi_label
    with pytest.raises(StepInputError, match="holds no serving_config.json"):
        task_outputs.version_config(f"models:/bare/{bare.registered_model_version}")
