"""A default CoLA pipeline run (issue 35): its evaluate report shows the slice table (CoLA's sources and the
length buckets, with intervals) and the top of the preprocess run's label audit; the model card has its
slice lines. Reuses the as-typed store's finished `mlflow run .` (tests/test_commands_as_typed.py), running
it as typed only when no test has yet."""

import tempfile
from pathlib import Path

import pytest

from sentclf.schema import LABEL_AUDIT_ARTIFACT
from sentclf.tracking import STEP_TAG

from .test_commands_as_typed import run_typed

pytestmark = [pytest.mark.docker, pytest.mark.e2e]
STEPS = ("preprocess", "train", "building", "evaluate")


def cola_pipelines(store) -> list:
    return [
        r
        for r in store.runs()
        if "mlflow.parentRunId" not in r.data.tags
        and r.info.status == "FINISHED"
        and r.data.params.get("dataset") == "cola"
        and all(r.data.tags.get(f"cache.{step}") == "ran" for step in STEPS)
    ]


def test_a_default_cola_run_reports_slices_and_the_label_audit(typed_store):
    if not cola_pipelines(typed_store):
        result = run_typed(typed_store, "mlflow run .")
        assert result.returncode == 0, result.stderr[-5000:]
    parent = cola_pipelines(typed_store)[-1]
    steps = {
        r.data.tags[STEP_TAG]: r
        for r in typed_store.runs()
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    client = typed_store.client
    preprocess, evaluate = steps["preprocess"], steps["evaluate"]
    assert preprocess.data.metrics["label_audit_seconds"] > 0
    with tempfile.TemporaryDirectory() as tmp:
        issues = Path(
            client.download_artifacts(preprocess.info.run_id, LABEL_AUDIT_ARTIFACT, tmp)
        ).read_text()
        report = Path(
            client.download_artifacts(evaluate.info.run_id, "evaluation/report.html", tmp)
        ).read_text()
        card = Path(client.download_artifacts(evaluate.info.run_id, "model_card.md", tmp)).read_text()
    assert issues.splitlines()[0] == "file,row,text,given_label,suggested_label,score"
    assert "<h2>Slices" in report and "source_code" in report and "length (tokens)" in report
    for source in ("ks08", "l-93", "ad03"):  # CoLA dev's largest sources
        assert f">{source}<" in report, source
    assert "Label audit of the training data" in report
    assert evaluate.data.metrics["slices"] >= 17 + 2 and evaluate.data.metrics["slices_seconds"] > 0
    assert "slice of the test rows" in card or "Significantly worse than the rest" in card
