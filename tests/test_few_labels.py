"""The few-labels page's commands as typed (docs/few-labels.md): eight labelled TREC questions per class
from the example data, a pipeline run that the train step turns few-shot (and still registers, builds,
serves and evaluates the usual version), then the selection command on the unlabelled pool and on a capture
folder of pool sentences: a batch file with the data's columns and an empty label, and a ledger."""

import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from sentclf.contract import STEP_TAG, TRAINING_MODE_TAG, TRAINING_ROWS_TAG

from .conftest import require_docker
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# Appended to the page's `make run`: short sequences and 2 pair iterations instead of 20 (the contrastive
# phase's cost is pairs x length), no label audit (its cross-validated fits), one epoch should the run
# fine-tune.
TINY = (
    "-P epochs=1 -P max_seq_length=32 -P few_shot_iterations=2 -P label_audit=false -P requests_per_level=50 "
    "-P latency_requests=200"
)


def shell_ok(store, command: str, timeout_s: float = 1800) -> str:
    result = store.shell(command, timeout_s=timeout_s)
    assert result.returncode == 0, command + "\n" + result.stdout[-4000:] + result.stderr[-6000:]
    return result.stdout


@pytest.fixture(scope="module")
def few_label_run(typed_store):
    """The page's block as printed, `~/sentclf-examples` moved to a folder of the test's own."""
    require_docker()
    folder = Path(tempfile.mkdtemp(prefix="sentclf-few-", dir=typed_store.root))
    lines = list(typed_block("few-labels").lines)
    assert lines[0] == "make example-data", lines
    shell_ok(typed_store, f"make example-data EXAMPLES={folder}", timeout_s=600)
    for line in lines[1:]:
        if line.startswith("make run ARGS="):
            assert line.endswith('"'), line
            line = f'{line[:-1]} {TINY}"'
        shell_ok(typed_store, line.replace("~/sentclf-examples", str(folder)))
    return folder


def test_eight_rows_per_class_train_few_shot_into_a_served_version(few_label_run, typed_store):
    assert len(pd.read_csv(few_label_run / "trec-8" / "data" / "train.csv")) == 48
    runs = typed_store.runs()
    train = [r for r in runs if r.data.tags.get(STEP_TAG) == "train"][-1]
    assert train.data.tags[TRAINING_MODE_TAG] == "few_shot"
    # Preprocess held one per class out; a model of the other 42 rows scored it, and the shipped model
    # trained on all 48 (few_shot_iterations=2: a +/- pair per row and iteration).
    assert int(train.data.tags[TRAINING_ROWS_TAG]) == 48
    assert train.data.metrics["contrastive_pairs"] == 48 * 2 * 2
    assert train.data.tags["validation_mode"] == "held_out" and "val_accuracy" in train.data.metrics
    evaluate = [r for r in runs if r.data.tags.get(STEP_TAG) == "evaluate"][-1]
    assert evaluate.info.status == "FINISHED"
    card = typed_store.client.download_artifacts(evaluate.info.run_id, "model_card.md")
    assert "**few-shot**" in Path(card).read_text()


def test_the_pool_gives_a_batch_ready_to_label(few_label_run):
    queue = few_label_run / "trec-8" / "queue"
    (batch,) = queue.glob("batch-*.csv")
    frame = pd.read_csv(batch, keep_default_na=False)
    assert list(frame.columns) == ["question", "answer_type"] and len(frame) == 50
    assert (frame["answer_type"] == "").all() and frame["question"].is_unique
    labelled = set(pd.read_csv(few_label_run / "trec-8" / "data" / "train.csv")["question"])
    assert not labelled & set(frame["question"])
    assert len((queue / "asked.jsonl").read_text().splitlines()) == 50


def test_a_capture_folder_gives_the_next_batch_and_make_the_one_after(few_label_run, typed_store):
    """The block's python line, then its make line on the same capture: the second batch is the next 20,
    none asked for before (the ledger), and the ledger then holds both."""
    lines = typed_block("label-next-capture").lines
    assert [line.split()[0] for line in lines] == ["python", "make"], lines
    work = Path(tempfile.mkdtemp(prefix="sentclf-capture-", dir=typed_store.root))
    pool = (few_label_run / "trec-8" / "pool.txt").read_text().splitlines()[:300]
    capture = work / "captured"
    capture.mkdir()
    with (capture / "capture-20261205T000000-host-1-0.jsonl").open("w") as out:
        for i, text in enumerate(pool):
            record = {"time": "2026-12-05T00:00:00.000000Z", "model": "trec", "version": "1", "id": str(i)}
            out.write(json.dumps(record | {"index": 0, "served": True, "text": text}) + "\n")
    queue = work / "label-queue"
    batches = []
    for line in lines:
        command = line.replace("captured/", f"{capture}/").replace("label-queue/", f"{queue}/")
        shell_ok(typed_store, command, timeout_s=600)
        (batch,) = set(queue.glob("batch-*.csv")) - set(batches)
        batches.append(batch)
    first, second = (set(pd.read_csv(batch)["question"]) for batch in batches)
    assert len(first) == len(second) == 20 and not first & second
    assert len((queue / "asked.jsonl").read_text().splitlines()) == 40
