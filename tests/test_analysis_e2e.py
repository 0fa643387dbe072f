"""Model analysis (issue 35, docs/analysis.md). A default CoLA pipeline run: its evaluate report shows the
slice table (CoLA's sources and the length buckets, with intervals) and the top of the preprocess run's
label audit; the model card has its slice lines. Reuses the as-typed store's finished `mlflow run .`
(tests/test_commands_as_typed.py, the one e2e pipeline that audits its labels), running it as typed only
when no test has yet. Then the page's blocks as printed: the slices command on a file of the test's own
(audit off, so it also runs `-P label_audit=false`), the audit's bound, and `make explore`."""

import json
import os
import signal
import socket
import tempfile
import urllib.request
from pathlib import Path

import pytest

from sentclf.contract import (
    DEFAULT_CHAMPION_URI,
    LABEL_AUDIT_ARTIFACT,
    LABEL_AUDIT_ROWS_METRIC,
    MODEL_VERSION_TAG,
    STEP_TAG,
)

from .conftest import wait_answering
from .test_commands_as_typed import run_typed
from .typed_blocks import make_dry_run, typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]
STEPS = ("preprocess", "train", "building", "evaluate")
# What the slices command gets added (as docs/your-data.md's test does): a tiny run of a model of its own.
TINY = (
    "-P epochs=1 -P max_train_samples=256 -P registered_model_name=tickets-classifier -P label_audit=false"
    " -P requests_per_level=50 -P latency_requests=200"
)


def cola_pipelines(store) -> list:
    """Finished CoLA pipelines whose every step ran with the label audit on (other tests in the shared
    store run CoLA pipelines of their own with `-P label_audit=false`, the live loop's challenger among
    them, and may finish after the as-typed one)."""
    return [
        r
        for r in store.runs()
        if "mlflow.parentRunId" not in r.data.tags
        and r.info.status == "FINISHED"
        and r.data.params.get("dataset") == "cola"
        and r.data.params.get("label_audit") == "true"
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


def test_make_explore_as_typed_answers_a_sentence_by_class_name(typed_store):
    """`make explore` on the default run's version (a tiny run may stay under the gate's floor, so not the
    champion), driven over its HTTP API (the browser test drives the same page on a fake model)."""
    if not cola_pipelines(typed_store):
        result = run_typed(typed_store, "mlflow run .")
        assert result.returncode == 0, result.stderr[-5000:]
    parent = cola_pipelines(typed_store)[-1]
    train = next(
        r
        for r in typed_store.runs()
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        and r.data.tags.get(STEP_TAG) == "train"
    )
    block = typed_block("explore")
    champion_line, line = block.lines
    assert champion_line == "make explore"
    assert f'-m tools.explore --model "{DEFAULT_CHAMPION_URI}"' in make_dry_run(champion_line)
    version = train.data.tags[MODEL_VERSION_TAG]
    port = free_port()
    typed = f"{line.replace('cola-classifier/3', f'cola-classifier/{version}')} ARGS='--port {port}'"
    process = typed_store.background(typed)
    try:
        # indexing the training sentences takes a while on a slow machine
        wait_answering(process, f"http://127.0.0.1:{port}/api/info", timeout_s=600)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/explain",
            data=json.dumps({"text": "The cat sat on the mat."}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer["label"] in ("unacceptable", "acceptable")
        assert [w["word"] for w in answer["words"]] == ["The", "cat", "sat", "on", "the", "mat."]
        assert len(answer["neighbours"]) == 5 and answer["embedding"] == "the model's pooled sentence vector"
        assert all(n["label"] != answer["label"] for n in answer["other_class"])
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def step_runs(store, parent_id: str) -> dict:
    return {
        r.data.tags[STEP_TAG]: r for r in store.runs() if r.data.tags.get("mlflow.parentRunId") == parent_id
    }


def write_tickets(path: Path, rows: int = 400) -> None:
    """A support-ticket file with two slice columns: the topic shows in the words, source and channel vary."""
    words = {"billing": "my invoice charged the card twice", "shipping": "the parcel has not arrived yet"}
    lines = ["message,topic,source,channel"]
    for i in range(rows):
        topic = ("billing", "shipping")[i % 2]
        lines.append(f"ticket {i}: {words[topic]} (case {i * 7 % 13}),{topic},{('web', 'app')[i % 3 == 0]},"
                     f"{('mail', 'chat', 'phone')[i % 5 % 3]}")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def test_the_slices_command_as_typed_on_a_file_of_its_own(typed_store, tmp_path):
    """docs/analysis.md's slices command: evaluate reports the model per source and per channel; with
    `-P label_audit=false` preprocess logs no label audit and the report shows none."""
    tickets = tmp_path / "tickets.csv"
    write_tickets(tickets)
    line = typed_block("analysis-slices").line("mlflow run .")
    result = typed_store.shell(f"{line.replace('/srv/labels/tickets.csv', str(tickets))} {TINY}")
    assert result.returncode == 0, result.stderr[-5000:]
    parent = next(
        r
        for r in reversed(typed_store.runs())
        if "mlflow.parentRunId" not in r.data.tags and r.data.params.get("dataset") == str(tickets)
    )
    steps = step_runs(typed_store, parent.info.run_id)
    preprocess, evaluate = steps["preprocess"], steps["evaluate"]
    client = typed_store.client
    assert LABEL_AUDIT_ARTIFACT not in [a.path for a in client.list_artifacts(preprocess.info.run_id)]
    with tempfile.TemporaryDirectory() as tmp:
        report = json.loads(
            Path(client.download_artifacts(evaluate.info.run_id, "evaluation/report.json", tmp)).read_text()
        )
        html_path = client.download_artifacts(evaluate.info.run_id, "evaluation/report.html", tmp)
        html = Path(html_path).read_text()
    dimensions = {(s["dimension"], s["value"]) for s in report["slices"]}
    assert {("source", "web"), ("source", "app"), ("channel", "mail"), ("channel", "chat")} <= dimensions
    assert report["label_issues"] is None and "Label audit of the training data" not in html


def test_the_audit_bound_as_typed(typed_store):
    """`mlflow run preprocess -P label_audit_max_rows=1000` audits a seeded sample of 1000 CoLA rows."""
    (line,) = typed_block("analysis-audit-bound").lines
    result = typed_store.shell(line)
    assert result.returncode == 0, result.stderr[-5000:]
    preprocess = next(
        r
        for r in reversed(typed_store.runs())
        if r.data.tags.get(STEP_TAG) == "preprocess" and r.data.params.get("label_audit_max_rows") == "1000"
    )
    assert preprocess.data.metrics[LABEL_AUDIT_ROWS_METRIC] == 1000
    paths = [a.path for a in typed_store.client.list_artifacts(preprocess.info.run_id)]
    assert LABEL_AUDIT_ARTIFACT in paths


def free_port(first: int = 19500, last: int = 19999) -> int:
    for port in range(first, last + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")
