"""A sentence-pair task end to end (docs/pairs.md, block `pairs`): the page's `make run` as printed, on the
shipped example of question pairs, with tiny parameters added; every step reads the pair (the preprocess
run's splits and tag, the train run's serving config, evaluate's report and model card), and the built
image answers pairs over gRPC and HTTP with the task's class names, and refuses a request without the
second input as INVALID_ARGUMENT / 400."""

import json
import re
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from sentclf.containers import free_port, running_server
from sentclf.contract import LABEL_NAMES_TAG, SERVER_IMAGE_TAG, STEP_TAG, TEXT_PAIR_TAG
from sentclf.kserve_client import LABEL_NAME_OUTPUT, PROBABILITIES_OUTPUT, build_inputs
from sentclf.schema import TEXT_PAIR_COLUMN
from sentclf_runtime.pairs import PAIR_INPUT_KEY, TEXT_PAIR_INPUT

from .conftest import REPO_ROOT, require_docker
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

TINY = "-P epochs=1 -P max_train_samples=256 -P label_audit=false"
CLASSES = ["different", "duplicate"]
EXAMPLE = REPO_ROOT / "examples" / "pairs" / "questions.csv"


@pytest.fixture(scope="module")
def pipeline(typed_store) -> dict:
    """The page's command, tiny; the parent run's steps by name."""
    require_docker()
    (command,) = typed_block("pairs").lines
    args = re.search(r'ARGS="([^"]*)"', command).group(1)
    result = typed_store.shell(f'make run ARGS="{args} {TINY}"', timeout_s=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    runs = typed_store.runs()
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][-1].info.run_id
    return {r.data.tags[STEP_TAG]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}


def test_every_step_reads_the_pair(typed_store, pipeline) -> None:
    assert set(pipeline) == {"preprocess", "train", "building", "evaluate"}
    client = typed_store.client
    preprocess, train, evaluate = pipeline["preprocess"], pipeline["train"], pipeline["evaluate"]
    assert preprocess.data.tags[TEXT_PAIR_TAG] == "question2"
    assert json.loads(preprocess.data.tags[LABEL_NAMES_TAG]) == CLASSES
    assert train.data.tags[TEXT_PAIR_TAG] == "question2"
    version = train.data.tags["registered_model_version"]
    tags = client.get_model_version("question-pairs-classifier", version).tags
    assert tags[TEXT_PAIR_TAG] == "question2"
    with tempfile.TemporaryDirectory() as tmp:
        split = pd.read_parquet(client.download_artifacts(preprocess.info.run_id, "data/test.parquet", tmp))
        assert TEXT_PAIR_COLUMN in split.columns
        report = Path(
            client.download_artifacts(evaluate.info.run_id, "evaluation/report.html", tmp)
        ).read_text()
        card = Path(client.download_artifacts(evaluate.info.run_id, "model_card.md", tmp)).read_text()
    assert "Sentence pairs" in report and split["text_pair"].iloc[0].replace("'", "&#39;") in report
    assert "## Task: sentence pairs" in card and "question2" in card
    for name in ("test_accuracy", "test_mcc"):
        assert name in evaluate.data.metrics, name


def test_the_image_answers_pairs_over_grpc_and_http(pipeline) -> None:
    image = pipeline["building"].data.tags[SERVER_IMAGE_TAG]
    frame = pd.read_csv(EXAMPLE).head(16)
    pairs = list(zip(frame["question1"], frame["question2"], strict=True))
    http_port = free_port()
    with running_server(image, {"HTTP_PORT": str(http_port)}, name_prefix="sentclf-pairs") as (_, port, _):
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        metadata = grpc.get_model_metadata("question-pairs", as_json=True)
        assert [tensor["name"] for tensor in metadata["inputs"]] == ["text", TEXT_PAIR_INPUT]
        outputs = [grpcclient.InferRequestedOutput(n) for n in (LABEL_NAME_OUTPUT, PROBABILITIES_OUTPUT)]
        result = grpc.infer("question-pairs", build_inputs(pairs), outputs=outputs)
        names = [n.decode() for n in result.as_numpy(LABEL_NAME_OUTPUT)]
        assert set(names) <= set(CLASSES) and result.as_numpy(PROBABILITIES_OUTPUT).shape == (16, 2)
        with pytest.raises(InferenceServerException, match=TEXT_PAIR_INPUT) as refused:
            grpc.infer("question-pairs", build_inputs(frame["question1"].tolist()))
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        grpc.close()
        http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        inputs = []
        for name, values in (("text", frame["question1"]), (TEXT_PAIR_INPUT, frame["question2"])):
            tensor = httpclient.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array(values.tolist(), dtype=object))
            inputs.append(tensor)
        answer = http.infer("question-pairs", inputs)
        np.testing.assert_allclose(
            answer.as_numpy(PROBABILITIES_OUTPUT), result.as_numpy(PROBABILITIES_OUTPUT), rtol=1e-5
        )
        with pytest.raises(InferenceServerException, match=TEXT_PAIR_INPUT) as refused:
            http.infer("question-pairs", inputs[:1])
        assert refused.value.status() == "400"
        http.close()


def test_the_serving_config_says_pairs(typed_store, pipeline) -> None:
    client = typed_store.client
    version = pipeline["train"].data.tags["registered_model_version"]
    source = client.get_model_version("question-pairs-classifier", version).source
    with tempfile.TemporaryDirectory() as tmp:
        # The version's logged model, found in the test's own store (a models:/ URI would resolve it in
        # the default store).
        location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp))
        (config,) = local.rglob("serving_config.json")
        assert json.loads(config.read_text())[PAIR_INPUT_KEY] == TEXT_PAIR_INPUT
