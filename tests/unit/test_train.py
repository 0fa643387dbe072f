"""The train room: bad parameters, a tiny real fine-tune with every artifact, and the parity gate."""

from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from sentclf.backbone import resolve_backbone
from sentclf.contract import STEP_TAG
from sentclf.metrics import classification_metrics
from sentclf.text_model import TextClassifier
from sentclf.tracking import version_model_id
from tests.unit.test_preprocess import step_argv

import preprocess
import train
from calibration import best_margin_shift, fold_shift_into_head, mcc_at_shifts, output_layer
from export import ParityError, check_parity, export_onnx, parity_report
from modeling import build_classifier
from training import (
    EncodedSplit,
    TrainConfig,
    WeightAverage,
    collate,
    evaluate,
    length_grouped_batches,
    optimizer_groups,
    parameter_depth,
)

TINY = [
    "--epochs",
    "1",
    "--max-train-samples",
    "64",
    "--batch-size",
    "16",
    "--learning-rate",
    "5e-5",
    "--max-seq-length",
    "32",
    "--seed",
    "3",
    "--patience",
    "1",
    "--warmup-ratio",
    "0.1",
    "--weight-decay",
    "0.01",
    "--layer-lr-decay",
    "0.8",
    "--ema-decay",
    "0.0",
    "--tune-threshold",
    "true",
    "--pooling",
    "mean",
    "--serve-variant",
    "fp32",
    "--base-model",
    "bundled",
]


def train_args(**overrides: str) -> list[str]:
    args = list(TINY)
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        args[args.index(flag) + 1] = value
    return args


@pytest.fixture
def data_run(tracking_store):
    preprocess.main(step_argv(val_fraction=0.05, seed=1))
    return mlflow.search_runs(experiment_ids=[tracking_store], output_format="list")[0].info.run_id


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"epochs": "0"}, "epochs must be >= 1"),
        ({"learning_rate": "-0.001"}, "learning_rate must be > 0"),
        ({"pooling": "max"}, "pooling must be one of mean, mix, cls"),
        ({"serve_variant": "fp16"}, "serve_variant must be one of fp32, optimized, int8"),
        ({"base_model": "no-such/model-anywhere"}, "base_model 'no-such/model-anywhere' cannot be loaded"),
    ],
)
def test_bad_parameters_fail_before_heavy_work(tracking_store, override, message):
    with pytest.raises(SystemExit, match=message):
        train.main([*train_args(**override), "--registered-model-name", "m"])


def test_a_few_shot_phase_of_no_pairs_is_refused(tracking_store):
    with pytest.raises(SystemExit, match="few_shot_iterations must be >= 1, got 0"):
        train.main([*train_args(), "--registered-model-name", "m", "--few-shot-iterations", "0"])


def test_batch_larger_than_data_is_rejected(data_run):
    with pytest.raises(SystemExit, match="batch_size 128 is larger than the 64 training rows"):
        train.main([*train_args(batch_size="128"), "--registered-model-name", "m", "--data-run-id", data_run])


def test_tiny_run_logs_every_artifact_and_registers_a_challenger(data_run, tracking_store):
    train.main([*train_args(), "--registered-model-name", "tiny-model"])  # newest preprocess run is found
    run = mlflow.search_runs(
        experiment_ids=[tracking_store], filter_string=f"tags.`{STEP_TAG}` = 'train'", output_format="list"
    )[0]
    assert run.info.status == "FINISHED"
    # The resolved run is a tag: MLflow already logged the MLproject's empty default as the param.
    assert run.data.tags["input.data_run_id"] == data_run
    for metric in (
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_mcc",
        "val_f1_macro",
        "val_f1_weighted",
        # Per class: once, for the shipped model, by class name (CoLA's two, read from the old-style run).
        "val_precision_class_acceptable",
        "val_recall_class_unacceptable",
        "val_support_class_acceptable",
        "parity_max_abs_diff",
        "best_epoch",
        "train_samples_per_second",
        "mean_train_samples_per_second",
    ):
        assert metric in run.data.metrics, metric
    assert run.data.metrics["parity_max_abs_diff"] <= 1e-4
    assert run.data.metrics["parity_label_mismatches"] == 0
    # The faster variant is measured and kept beside the served fp32 model; int8 (its calibration costs
    # 10-40 s) only when asked for (tests/unit/test_int8.py).
    assert run.data.metrics["variant_optimized_max_abs_diff"] <= 1e-3
    assert "variant_optimized_val_mcc_delta" in run.data.metrics
    assert not any(key.startswith("variant_int8_") for key in run.data.metrics)
    assert run.data.tags["served_variant"] == "fp32"
    assert run.data.tags["label_names"] == '["unacceptable", "acceptable"]'
    assert run.data.tags["decision_calibration"] == "margin_shift"
    assert "decision_shift" in run.data.metrics
    variant_files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "onnx_variants")}
    assert variant_files == {"onnx_variants/model.optimized.onnx"}
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/confusion_matrix.json",
        "evaluation/misclassified.json",
        "evaluation/classification_report.txt",
    } <= artifacts

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("tiny-model", "challenger")
    assert str(version.version) == run.data.tags["registered_model_version"]
    assert version.tags["train_run_id"] == run.info.run_id
    assert version.tags["label_names"] == '["unacceptable", "acceptable"]'
    model_dir = mlflow.artifacts.download_artifacts(f"models:/tiny-model/{version.version}")
    session_inputs = [i.name for i in onnx.load(f"{model_dir}/artifacts/model.onnx").graph.input]
    assert session_inputs == ["input_ids", "attention_mask", "token_type_ids"]
    for extra in ("tokenizer.json", "serving_config.json"):
        assert (Path(model_dir) / "artifacts" / extra).is_file(), extra
    # The registered model takes sentences (the text-level pyfunc), and agrees with ONNX Runtime in process.
    sentences = ["The cat sat on the mat.", "Sat mat the on cat."]
    predicted = mlflow.pyfunc.load_model(f"models:/tiny-model/{version.version}").predict(sentences)
    assert list(predicted.columns) == ["class", "name", "probabilities"]
    reference = TextClassifier.from_dir(model_dir).score(sentences)
    assert predicted["class"].tolist() == reference.labels.tolist()
    # Validation metrics on the version's logged model (MLflow 3's model entity), the splits as inputs.
    logged = client.get_logged_model(version_model_id("tiny-model", version.version))
    assert {"val_mcc", "parity_max_abs_diff"} <= {m.key for m in logged.metrics}
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    contexts = {i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for i in inputs}
    assert contexts == {"train": "train", "validation": "validation"}
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("tiny-model", "champion")


def test_parity_gate_fails_on_a_corrupted_onnx_model(tmp_path):
    source = resolve_backbone("bundled")
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).eval()
    texts = ["The cat sat.", "Sat cat the mat on.", "John seems to be happy.", "Who did you see Mary and?"]
    split = EncodedSplit(tokenizer(texts)["input_ids"], np.array([1, 0, 1, 0]), texts)
    sample = collate(split, np.arange(len(texts)), tokenizer.pad_token_id)
    path = export_onnx(model, sample, tmp_path / "model.onnx")
    check_parity(parity_report(model, path, split, tokenizer.pad_token_id))  # the honest export passes

    corrupted = onnx.load(str(path))
    for initializer in corrupted.graph.initializer:
        if initializer.name.endswith("classifier.weight") or "classifier" in initializer.name:
            weights = onnx.numpy_helper.to_array(initializer) + 0.5
            initializer.CopyFrom(onnx.numpy_helper.from_array(weights.astype(np.float32), initializer.name))
    onnx.save(corrupted, str(tmp_path / "corrupted.onnx"))
    with pytest.raises(ParityError, match="does not match PyTorch"):
        check_parity(parity_report(model, tmp_path / "corrupted.onnx", split, tokenizer.pad_token_id))


def test_length_grouped_batches_cover_every_row_once():
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    batches = length_grouped_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spreads = [lengths[b].max() - lengths[b].min() for b in batches]
    assert np.median(spreads) < 10  # grouped by length: little padding


def test_collate_pads_dynamically():
    split = EncodedSplit([[101, 5, 102], [101, 102]], np.array([1, 0]), ["a", "b"])
    batch = collate(split, np.array([0, 1]), pad_id=0)
    assert batch["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].dtype == torch.int64


def test_parameter_depth_orders_embeddings_layers_and_head():
    assert parameter_depth("encoder.embeddings.word_embeddings.weight", 6) == 0
    assert parameter_depth("encoder.encoder.layer.0.attention.self.query.weight", 6) == 1
    assert parameter_depth("bert.encoder.layer.5.output.dense.bias", 6) == 6
    assert parameter_depth("classifier.weight", 6) == 7
    assert parameter_depth("bert.pooler.dense.weight", 6) == 7


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_layer_lr_decay_gives_the_head_the_full_rate_and_the_embeddings_the_least(pooling):
    source = resolve_backbone("bundled")
    model = build_classifier(source, AutoConfig.from_pretrained(source, num_labels=2), pooling)
    config = TrainConfig(
        epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        max_seq_length=16,
        seed=0,
        patience=1,
        warmup_ratio=0.0,
        weight_decay=0.01,
        layer_lr_decay=0.5,
    )
    groups = optimizer_groups(model, config)
    rate_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(rate_of) == len(named)  # every parameter is optimised exactly once
    head = next(p for n, p in named.items() if n.startswith("classifier.") and n.endswith("weight"))
    embeddings = next(p for n, p in named.items() if n.endswith("word_embeddings.weight"))
    layer_norm = next(p for n, p in named.items() if n.endswith("LayerNorm.weight"))
    assert rate_of[id(head)] == pytest.approx(1e-3)
    assert rate_of[id(embeddings)] == pytest.approx(1e-3 * 0.5**7)
    assert decay_of[id(head)] == 0.01 and decay_of[id(layer_norm)] == 0.0


def test_weight_average_is_applied_inside_the_block_and_undone_after_it():
    layer = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.constant_(layer.weight, 0.0)
    average = WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(4.0)
    average.update()  # 0.5 * 0 + 0.5 * 4
    with average.applied():
        assert layer.weight.tolist() == [[2.0, 2.0]]
    assert layer.weight.tolist() == [[4.0, 4.0]]
    assert layer.weight.requires_grad


def test_mcc_at_shifts_matches_the_metric_for_every_shift():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=300)
    margins = rng.normal(size=300) + labels  # informative but noisy
    shifts = np.array([-2.0, -0.5, 0.0, 0.3, 1.7, 50.0])
    expected = [classification_metrics(labels, (margins + s > 0).astype(int))["mcc"] for s in shifts]
    assert mcc_at_shifts(labels, margins, shifts) == pytest.approx(expected, abs=1e-9)


def test_best_margin_shift_finds_the_threshold_of_a_biased_model():
    labels = np.array([0] * 30 + [1] * 70)
    margins = np.concatenate([np.linspace(0.5, 1.5, 30), np.linspace(2.0, 4.0, 70)])  # all predicted 1
    logits = np.stack([np.zeros(100), margins], axis=1)
    shift, before, after = best_margin_shift(labels, logits)
    assert before == 0.0 and after == pytest.approx(1.0)
    assert -2.0 < shift < -1.5  # between the classes
    unbiased = np.stack([np.zeros(100), margins - 1.75], axis=1)
    assert best_margin_shift(labels, unbiased)[0] == 0.0  # no shift when none helps


def test_folding_the_shift_moves_every_margin_by_exactly_that_much():
    head = torch.nn.Linear(4, 2)
    features = torch.randn(8, 4)
    before = head(features)
    fold_shift_into_head(head, -0.8)
    after = head(features)
    margin_change = (after[:, 1] - after[:, 0]) - (before[:, 1] - before[:, 0])
    assert torch.allclose(margin_change, torch.full((8,), -0.8), atol=1e-6)


def test_output_layer_is_the_last_linear_layer_of_the_head():
    class RobertaStyle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Sequential(
                torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
            )

    model = RobertaStyle()
    assert output_layer(model) is model.classifier[2]
    with pytest.raises(ValueError, match="tune_threshold=false"):
        output_layer(torch.nn.Linear(8, 2))


class _MarginModel(torch.nn.Module):
    """A classifier whose margin (logit 1 - logit 0) is the sentence's first token id minus 10."""

    config = type("Config", (), {"num_labels": 2})()

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        margin = input_ids[:, 0].float() - 10.0
        logits = torch.stack([torch.zeros_like(margin), margin], dim=1)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def test_evaluate_reports_the_mcc_at_the_tuned_threshold():
    # Labels flip at first-token 13, but argmax flips at 10: tuning the threshold makes it perfect.
    ids = [[i] for i in range(5, 20)]
    labels = np.array([int(i >= 13) for i in range(5, 20)])
    split = EncodedSplit(ids, labels, [str(i) for i in range(5, 20)])
    metrics = evaluate(_MarginModel(), split, batch_size=4, pad_id=0, tune_threshold=True)
    assert metrics["mcc"] < 0.8
    assert metrics["mcc_tuned_threshold"] == pytest.approx(1.0)
    assert "mcc_tuned_threshold" not in evaluate(_MarginModel(), split, batch_size=4, pad_id=0)


@pytest.mark.parametrize(("select_epoch", "ran", "kept"), [(True, 2, 1), (False, 3, 3)])
def test_a_validation_split_that_scores_every_epoch_alike_keeps_the_first_unless_told_to_keep_the_last(
    monkeypatch, select_epoch, ran, kept
):
    """Early stopping keeps the first of equal epochs; few-label data whose validation rows every epoch
    gets right (train/distill.py) runs every epoch and keeps the last instead."""
    import training

    monkeypatch.setattr(training, "evaluate", lambda *args: {"loss": 0.1, "mcc": 1.0, "accuracy": 1.0})
    source = resolve_backbone("bundled")
    model = build_classifier(source, AutoConfig.from_pretrained(source, num_labels=2), "mean")
    split = EncodedSplit([[101, 7592, 102], [101, 2088, 102]], np.array([0, 1]), ["hello", "world"])
    config = TrainConfig(3, 2, 1e-4, 8, 0, 1, 0.0, 0.0, select_epoch=select_epoch)
    summary = training.train(model, split, split, config, 0, lambda epoch, metrics: None)
    assert (summary["epochs_run"], summary["best_epoch"]) == (ran, kept)
