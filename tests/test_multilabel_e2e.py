"""Several labels per text end to end: docs/multi-label.md's block as typed, its `make example-data` into a
folder outside the repository and its `make run` on the templated tickets made there (tiny parameters
added), through preprocess, train, building and evaluate; the served image answers each text's label set
over gRPC (`label_set`, a JSON list) with every label's probability, and evaluate reports micro-F1 with
its interval and gates on it."""

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient

from sentclf.containers import running_server
from sentclf.contract import LABEL_NAMES_TAG, STEP_TAG, TEST_MICRO_F1_METRIC
from sentclf.kserve_client import build_inputs

from .conftest import require_docker
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

LABELS = ("billing", "login", "refund", "shipping")
TINY = "-P epochs=1 -P max_seq_length=32 -P requests_per_level=50 -P latency_requests=200"


@pytest.fixture(scope="module")
def examples(typed_store) -> Path:
    """The page's `make example-data`, as printed, into a folder outside the repository."""
    require_docker()
    folder = Path(tempfile.mkdtemp(prefix="sentclf-examples-", dir=typed_store.root))
    command = typed_block("multilabel").line("make example-data")
    assert command == "make example-data", command
    result = typed_store.shell(f"{command} EXAMPLES={folder}", timeout_s=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder


def test_the_multilabel_page_as_typed(typed_store, examples):
    block = typed_block("multilabel")
    assert len(block.lines) == 2, block.lines  # the two lines below, nothing untested
    command = block.line("make run").replace("~/sentclf-examples", str(examples))
    assert str(examples / "tickets" / "tickets.csv") in command, command
    args = re.search(r'ARGS="([^"]*)"', command).group(1)
    result = typed_store.shell(f'make run ARGS="{args} {TINY}"', timeout_s=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    runs = typed_store.runs()
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][-1].info.run_id
    steps = {r.data.tags[STEP_TAG]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert set(steps) == {"preprocess", "train", "building", "evaluate"}
    assert json.loads(steps["preprocess"].data.tags[LABEL_NAMES_TAG]) == list(LABELS)
    assert steps["preprocess"].data.tags["label_audit"] == "done"  # per label (multilabel_audit.py)

    metrics = steps["evaluate"].data.metrics
    for name in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"):
        assert {f"test_{name}", f"test_{name}_low", f"test_{name}_high"} <= set(metrics), name
    assert metrics[f"{TEST_MICRO_F1_METRIC}_low"] <= metrics[TEST_MICRO_F1_METRIC]
    assert "gate.decision" in steps["evaluate"].data.tags
    assert metrics["slices"] >= 1  # length buckets at least (multilabel_slices.py)
    with tempfile.TemporaryDirectory() as tmp:
        client = typed_store.client
        report = Path(
            client.download_artifacts(steps["evaluate"].info.run_id, "evaluation/report.html", tmp)
        ).read_text()
    for name in LABELS:
        assert f"<td>{name}</td>" in report, name
    assert "<h2>Slices" in report and "length (tokens)" in report

    version = steps["train"].data.tags["registered_model_version"]
    thresholds = [steps["train"].data.metrics[f"val_threshold_label_{name}"] for name in LABELS]
    texts = pd.read_csv(examples / "tickets" / "tickets.csv")["text"].head(12).tolist()
    image = steps["building"].data.tags["server_image"]
    with running_server(image, name_prefix="sentclf-multilabel") as (_, port, _):
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        metadata = grpc.get_model_metadata("ticket-topics", as_json=True)
        result = grpc.infer("ticket-topics", build_inputs(texts))
        grpc.close()
    assert [o["name"] for o in metadata["outputs"]][-1] == "label_set"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (12, 4)
    sets = [json.loads(item) for item in result.as_numpy("label_set")]
    expected = [[LABELS[j] for j in range(4) if row[j] >= thresholds[j]] for row in probabilities]
    assert sets == expected
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert typed_store.client.get_model_version("ticket-topics-classifier", version).tags[
        TEST_MICRO_F1_METRIC
    ]
