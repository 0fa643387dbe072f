"""Your task, not only CoLA: the your-data page's commands as typed, on two real data sets with string
labels made from a PyPI package (examples/example_data.py): TREC questions by answer type (6 classes) and
SMS messages as ham or spam. A tiny `make run` from a folder outside the repository each; the served
answers carry the class names and the report shows the per-class table."""

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient

from sentclf.containers import running_server
from sentclf.contract import LABEL_NAMES_TAG, STEP_TAG
from sentclf.kserve_client import LABEL_NAME_OUTPUT, LABEL_OUTPUT, PROBABILITIES_OUTPUT, build_inputs

from .conftest import require_docker
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

TREC = ("abbreviation", "description", "entity", "human", "location", "numeric")
TINY = (
    "-P epochs=1 -P max_train_samples=256 -P label_audit=false -P requests_per_level=50"
    " -P latency_requests=200"
)


def your_data_commands() -> list[str]:
    """The lines of the your-data page's block (docs/your-data.md), comments stripped."""
    return list(typed_block("your-data").lines)


@pytest.fixture(scope="module")
def examples(typed_store):
    """`make example-data` as the page prints it, into a folder outside the repository."""
    require_docker()
    folder = Path(tempfile.mkdtemp(prefix="sentclf-examples-", dir=typed_store.root))
    command = your_data_commands()[0]
    assert command == "make example-data", command
    result = typed_store.shell(f"{command} EXAMPLES={folder}", timeout_s=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder


def run_pipeline(store, command: str, examples: Path) -> str:
    """A page's `make run` line on the example folder, tiny; returns the parent run id."""
    command = command.replace("~/sentclf-examples", str(examples))
    args = re.search(r'ARGS="([^"]*)"', command).group(1)
    result = store.shell(f'make run ARGS="{args} {TINY}"', timeout_s=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    return [r for r in store.runs() if "mlflow.parentRunId" not in r.data.tags][-1].info.run_id


def children(store, parent_id: str) -> dict:
    runs = store.runs()
    return {r.data.tags[STEP_TAG]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}


def served_names(image: str, model: str, sentences: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    with running_server(image, name_prefix="sentclf-yourdata") as (_, port, _):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        outputs = [
            grpcclient.InferRequestedOutput(n)
            for n in (LABEL_OUTPUT, LABEL_NAME_OUTPUT, PROBABILITIES_OUTPUT)
        ]
        result = client.infer(model, build_inputs(sentences), outputs=outputs)
        config = client.get_model_config(model, as_json=True)["config"]
        client.close()
    names = [n.decode() for n in result.as_numpy(LABEL_NAME_OUTPUT)]
    assert json.loads(config["parameters"][LABEL_NAMES_TAG]["string_value"])
    return result.as_numpy(LABEL_OUTPUT), names, result.as_numpy(PROBABILITIES_OUTPUT)


def check_run(store, parent_id: str, model: str, classes: tuple[str, ...], test_file: Path, text_column: str):
    steps = children(store, parent_id)
    assert set(steps) == {"preprocess", "train", "building", "evaluate"}
    client = store.client
    preprocess, train, evaluate = steps["preprocess"], steps["train"], steps["evaluate"]
    assert json.loads(preprocess.data.tags[LABEL_NAMES_TAG]) == list(classes)
    version = train.data.tags["registered_model_version"]
    assert json.loads(client.get_model_version(model, version).tags[LABEL_NAMES_TAG]) == list(classes)

    metrics = evaluate.data.metrics
    for name in ("test_accuracy", "test_mcc", "test_f1_macro", "test_f1_macro_low", "test_f1_macro_high"):
        assert name in metrics, name
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(
            client.download_artifacts(evaluate.info.run_id, "evaluation/report.html", tmp)
        ).read_text()
    for name in classes:
        assert re.search(rf">\s*{re.escape(name)}\s*<", report), f"no row for class {name} in report.html"

    sentences = pd.read_csv(test_file)[text_column].head(16).tolist()
    # The server answers to the task's name (trec-classifier: `trec`), recorded where evaluate found it.
    served = model.removesuffix("-classifier")
    assert client.get_model_version(model, version).tags["served_model_name"] == served
    assert evaluate.data.tags["input.served_name"] == served
    image = steps["building"].data.tags["server_image"]
    labels, names, probabilities = served_names(image, served, sentences)
    assert probabilities.shape == (16, len(classes))
    assert names == [classes[i] for i in labels]
    assert set(names) <= set(classes)


def test_a_multiclass_task_with_string_labels_end_to_end(typed_store, examples):
    command = next(line for line in your_data_commands() if "trec" in line)
    parent = run_pipeline(typed_store, command, examples)
    check_run(typed_store, parent, "trec-classifier", TREC, examples / "trec" / "test.csv", "question")


def test_a_binary_task_with_string_labels_end_to_end(typed_store, examples):
    command = next(line for line in your_data_commands() if "sms-spam" in line)
    parent = run_pipeline(typed_store, command, examples)
    check_run(
        typed_store, parent, "spam-classifier", ("ham", "spam"), examples / "sms-spam" / "test.csv", "message"
    )
