"""`train -e tune` on data with several labels per text: trials report the validation micro-F1 at tuned
per-label thresholds (what train selects epochs on and ships) to the pruner, the parent reports the best
as `best_val_micro_f1` (registering the best is train's own finish, tested multi-label in
test_multilabel_train.py; left out here, it would double the test's time)."""

import json

import mlflow
import pytest

from sentclf.contract import SUMMARY_TAG
from sentclf.schema import LabelSet
from tests.unit.test_multilabel_train import LABELS, tickets
from tests.unit.test_train import train_args
from tests.unit.test_train_multiclass import log_preprocess_run

import tune
from tune_objective import objective


def test_the_objective_follows_the_task():
    multi = objective(multi_label=True, calibrate=False)
    assert (multi.epoch_metric, multi.best_metric, multi.short) == (
        "val_micro_f1_tuned",
        "best_val_micro_f1",
        "val_micro_f1",
    )
    assert objective(False, True).epoch_metric == "val_mcc_tuned_threshold"
    assert (
        objective(False, False).epoch_metric == "val_mcc"
        and objective(False, False).best_metric == "best_val_mcc"
    )


def test_a_multi_label_search_maximises_validation_micro_f1(tracking_store, tmp_path):
    frames = {"train": tickets(32, 0), "validation": tickets(12, 1), "test": tickets(8, 2)}
    run_id = log_preprocess_run(frames, LabelSet(LABELS, LABELS), tmp_path)
    schema = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/schema.json"))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text(json.dumps(schema | {"label_mode": "multi"}), "schema.json")
    search = ["--trials", "1", "--timeout-min", "0", "--register-best", "false", "--space", "epochs=1"]
    search += ["--prune-warmup-epochs", "1", "--study-name", "multi", "--registered-model-name", "tickets"]
    tune.main([*train_args(max_train_samples="-1", max_seq_length="16"), *search, "--data-run-id", run_id])

    client = mlflow.MlflowClient()
    runs = client.search_runs([tracking_store], order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if r.data.tags.get("sentclf.step") == "tune"]
    assert parent.info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [r.data.tags["tune.state"] for r in trials] == ["COMPLETE"]
    for trial in trials:  # what the pruner read, per epoch
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "val_micro_f1_tuned")] == [1]
        assert "best_val_mcc" not in trial.data.metrics
    best = next(r for r in trials if r.data.tags["tune.trial"] == parent.data.tags["best.trial"])
    assert parent.data.metrics["best_val_micro_f1"] == pytest.approx(best.data.metrics["best_val_micro_f1"])
    assert "best_val_mcc" not in parent.data.metrics
    assert parent.data.tags[SUMMARY_TAG].startswith("best validation micro-F1 ")
    stored = json.loads(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/study/best.json"))
    assert stored["val_micro_f1"] == pytest.approx(parent.data.metrics["best_val_micro_f1"])
