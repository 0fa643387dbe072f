"""The tuning page's search commands (docs/tuning.md), run in a shell as printed with tiny parameters added:
a 3-trial search with nested trial runs, a pruned trial, the best parameters, the figures and the best
model registered; and a search cancelled mid-trial (SIGTERM to its process group) that leaves its finished
trials, its runs ended, and no container."""

import os
import signal
import time

import pytest

from sentclf.contract import STEP_TAG

from .test_commands_as_typed import leftover_containers, output, wait_for_line
from .typed_blocks import typed_block

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# Tiny: 64 rows, 1 epoch per trial; trial 2 is made to report the worst MCC (a test-only knob) so the
# median pruner must prune it.
TINY = "-P trials=3 -P max_train_samples=64 -P space=epochs=1 -P force_prune=2 -P study_name=typed"


def tune_commands() -> list[str]:
    return list(typed_block("tune").lines)


def ensure_preprocess_run(store) -> None:
    if not [r for r in store.runs() if r.data.tags.get(STEP_TAG) == "preprocess"]:
        result = store.shell("mlflow run preprocess -P label_audit=false")
        assert result.returncode == 0, output(result)


def test_a_tiny_search_as_typed(typed_store):
    (command, *_) = tune_commands()
    assert command.startswith("mlflow run train -e tune")
    ensure_preprocess_run(typed_store)
    result = typed_store.shell(f"{command} {TINY}", timeout_s=1200)
    assert result.returncode == 0, output(result)
    client = typed_store.client
    runs = typed_store.runs()
    parent = [r for r in runs if r.data.tags.get(STEP_TAG) == "tune"][-1]
    assert parent.info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [r.data.tags["tune.trial"] for r in trials] == ["0", "1", "2"]
    assert [(r.data.tags["tune.state"], r.info.status) for r in trials] == [
        ("COMPLETE", "FINISHED"),
        ("COMPLETE", "FINISHED"),
        ("PRUNED", "KILLED"),
    ]
    for trial in trials:
        assert trial.data.params["max_train_samples"] == "64"
        assert "val_mcc" in trial.data.metrics
    best = next(r for r in trials if r.data.tags["tune.trial"] == parent.data.tags["best.trial"])
    for name in ("learning_rate", "layer_lr_decay", "batch_size", "dropout", "warmup_ratio", "epochs"):
        assert parent.data.tags[f"best.{name}"], name
    assert parent.data.tags["best.learning_rate"] == best.data.params["learning_rate"]
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {
        "figures/optimization_history.png",
        "figures/intermediate_values.png",
        "figures/param_importances.png",
    } <= figures
    assert "study/study.db" in {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    version = client.get_model_version_by_alias("cola-classifier", "challenger")
    assert version.run_id == best.info.run_id
    assert parent.data.tags["registered_model_version"] == str(version.version)
    assert leftover_containers() == []


def test_a_search_cancelled_mid_trial_keeps_its_finished_trials_and_leaves_nothing(typed_store):
    (command, *_) = tune_commands()
    ensure_preprocess_run(typed_store)
    tiny = "-P trials=3 -P max_train_samples=256 -P space=epochs=2 -P study_name=cancelled"
    process = typed_store.background(f"{command} {tiny}")
    seen: list[str] = []
    try:
        wait_for_line(process, "trial 1:", seen)  # trial 0 finished, trial 1 started
        wait_for_line(process, "INFO train: training on", seen)
        cancelled = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
        while leftover_containers():
            assert time.monotonic() - cancelled < 30, f"containers left: {leftover_containers()}"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log = "".join(seen) + process.stdout.read()
    assert process.returncode != 0, log[-3000:]
    runs = typed_store.runs()
    parent = [
        r
        for r in runs
        if r.data.tags.get("tune.study_name") == "cancelled" and "tune.trial" not in r.data.tags
    ][-1]
    assert parent.info.status == "KILLED", log[-3000:]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [(r.data.tags["tune.state"], r.info.status) for r in trials] == [
        ("COMPLETE", "FINISHED"),
        ("INTERRUPTED", "KILLED"),
    ]
    assert "study/study.db" in {
        a.path for a in typed_store.client.list_artifacts(parent.info.run_id, "study")
    }
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    assert leftover_containers() == []


ROOT_TUNE = "mlflow run . --env-manager local -e tune"


def test_the_root_tune_entry_point_runs_preprocess_then_the_search(typed_store):
    assert f"`{ROOT_TUNE}`" in typed_block("tune").page.read_text()
    tiny = "-P trials=2 -P max_train_samples=64 -P space=epochs=1 -P study_name=root -P label_audit=false"
    result = typed_store.shell(f"{ROOT_TUNE} {tiny}", timeout_s=1200)
    assert result.returncode == 0, output(result)
    runs = typed_store.runs()
    parent = [r for r in runs if r.data.tags.get("mlflow.runName") == "tune pipeline"][-1]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [r.data.tags.get(STEP_TAG) for r in children] == ["preprocess", "tune"]
    search = children[1]
    assert search.data.tags["input.data_run_id"] == children[0].info.run_id
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.info.run_id]
    assert len(trials) == 2 and parent.data.tags["summary"].startswith("best validation MCC")
    assert leftover_containers() == []
