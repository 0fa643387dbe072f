"""Several labels per text in the train room and its shared maths: the metrics and the per-label
thresholds (sentclf.multilabel_metrics), the BCE-with-logits head, and a tiny train step on a multi-label
preprocess run whose registered version carries `label_mode: multi` and one tuned threshold per label into
its serving config, and whose pyfunc answers each text's label set."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from sentclf.contract import STEP_TAG
from sentclf.multilabel_metrics import best_thresholds, per_label, resampled_summary, summary
from sentclf.schema import LabelSet
from tests.unit.test_train import train_args
from tests.unit.test_train_multiclass import log_preprocess_run

import train
from modeling import MeanPoolingClassifier

LABELS = ("billing", "login", "shipping", "refund")
PHRASES = ("charged twice", "cannot sign in", "parcel is late", "money back")


def test_summary_metrics_on_a_small_case():
    targets = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    decisions = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    metrics = summary(targets, decisions)
    # tp 5, predicted 6, actual 6: micro F1 = 10/12; per label F1 1, 1, 1/2
    assert metrics["micro_f1"] == pytest.approx(10 / 12)
    assert metrics["macro_f1"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["subset_accuracy"] == pytest.approx(0.5)
    assert metrics["hamming_loss"] == pytest.approx(2 / 12)
    labels = per_label(targets, decisions, ("a", "b", "c/d"))
    assert labels["precision_label_c_d"] == 0.5 and labels["recall_label_c_d"] == 0.5
    draws = np.random.default_rng(0).integers(0, 4, size=(50, 4))
    resampled = resampled_summary(targets, decisions, draws)
    assert resampled["micro_f1"].shape == (50,) and (resampled["hamming_loss"] >= 0).all()


def test_thresholds_maximise_each_labels_f1_and_an_untunable_label_keeps_one_half():
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    probs = np.array([[0.30, 0.9], [0.25, 0.1], [0.20, 0.8], [0.05, 0.2]])
    thresholds, f1 = best_thresholds(targets, probs)
    assert 0.20 < thresholds[0] <= 0.25 and f1[0] == 1.0  # both positives, no negative
    assert thresholds[1] == 0.5  # no positive text: nothing to tune on


def test_float_targets_train_a_sigmoid_head_with_bce(tmp_path):
    from transformers import AutoConfig

    from sentclf.backbone import resolve_backbone

    source = resolve_backbone("bundled")
    config = AutoConfig.from_pretrained(source, num_labels=4)
    model = MeanPoolingClassifier(source, config)
    ids = torch.tensor([[101, 2000, 102], [101, 2001, 102]])
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    output = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits, targets)
    assert torch.allclose(output.loss, expected)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_train_multi_hot_targets_with_bce(precision):
    from transformers import AutoConfig

    from sentclf.backbone import resolve_backbone

    from precision import training_steps

    source = resolve_backbone("bundled")
    model = MeanPoolingClassifier(source, AutoConfig.from_pretrained(source, num_labels=4))
    ids = torch.tensor([[101, 2000, 102], [101, 2001, 102]])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    model.eval()  # no dropout: the loss is a function of the weights
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy_with_logits(model(**batch).logits, targets)
    loss = training_steps(model, precision).loss(batch | {"labels": targets})
    assert abs(float(loss) - float(expected)) < 0.05  # bf16 rounds the logits


def tickets(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(rows):
        chosen = sorted(rng.choice(4, size=rng.integers(1, 3), replace=False).tolist())
        made.append((" and ".join(PHRASES[j] for j in chosen) + ".", chosen))
    return pd.DataFrame(made, columns=["sentence", "label"])


def test_a_multi_label_run_ships_its_thresholds_and_answers_label_sets(tracking_store, tmp_path):
    frames = {"train": tickets(48, 0), "validation": tickets(16, 1), "test": tickets(8, 2)}
    run_id = log_preprocess_run(frames, LabelSet(LABELS, LABELS), tmp_path)
    schema = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/schema.json"))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text(json.dumps(schema | {"label_mode": "multi"}), "schema.json")
    train.main(
        [
            *train_args(max_train_samples="-1", max_seq_length="16"),
            "--registered-model-name",
            "multi",
            "--data-run-id",
            run_id,
        ]
    )
    run = mlflow.search_runs(
        experiment_ids=[tracking_store], filter_string=f"tags.`{STEP_TAG}` = 'train'", output_format="list"
    )[0]
    assert run.info.status == "FINISHED"
    for key in (
        "val_micro_f1",
        "val_macro_f1",
        "val_subset_accuracy",
        "val_hamming_loss",
        "best_val_micro_f1",
    ):
        assert key in run.data.metrics, key
    assert "val_threshold_label_refund" in run.data.metrics and "val_f1_label_login" in run.data.metrics
    version = mlflow.MlflowClient().get_model_version_by_alias("multi", "challenger")
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/multi/{version.version}"))
    serving = json.loads((model_dir / "artifacts" / "serving_config.json").read_text())
    assert serving["label_mode"] == "multi" and serving["labels"] == list(LABELS)
    assert len(serving["thresholds"]) == 4 and all(0 < t < 1 for t in serving["thresholds"])
    assert serving["thresholds"][3] == run.data.metrics["val_threshold_label_refund"]
    frame = mlflow.pyfunc.load_model(f"models:/multi/{version.version}").predict(["money back please"])
    assert set(json.loads(frame["label_set"].iloc[0])) <= set(LABELS)
    probabilities = frame["probabilities"].iloc[0]
    chosen = [LABELS[j] for j in range(4) if probabilities[j] >= serving["thresholds"][j]]
    assert json.loads(frame["label_set"].iloc[0]) == chosen


def test_int8_is_refused_for_multi_label_data_before_training(tracking_store, tmp_path):
    """int8's rule is a paired bootstrap of the single-label test MCC: a multi-label run that asks for it
    fails at once, naming the variants it can serve, rather than after its training."""
    frames = {"train": tickets(48, 0), "validation": tickets(16, 1), "test": tickets(8, 2)}
    run_id = log_preprocess_run(frames, LabelSet(LABELS, LABELS), tmp_path)
    schema = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/schema.json"))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text(json.dumps(schema | {"label_mode": "multi"}), "schema.json")
    with pytest.raises(SystemExit, match=r"serve_variant=int8 .*label_mode=multi.*serve_variant=fp32"):
        train.main(
            [
                *train_args(serve_variant="int8", max_seq_length="16"),
                "--registered-model-name",
                "multi-int8",
                "--data-run-id",
                run_id,
            ]
        )
    assert mlflow.search_registered_models(filter_string="name = 'multi-int8'") == []
