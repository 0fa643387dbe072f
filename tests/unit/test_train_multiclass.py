"""The train room with N classes: the head and config from the preprocess run's label set, metrics and
figures by class name, the registered model's signature, tags and serving config, and the errors."""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification

from sentclf.backbone import resolve_backbone
from sentclf.contract import STEP_TAG
from sentclf.plots import confusion_figure, confusion_table
from sentclf.schema import COLA_LABELS, SCHEMA_ARTIFACT, LabelSet
from sentclf.tracking import StepInputError
from tests.unit.test_train import train_args

import train
from modeling import build_classifier
from reporting import classification_report, misclassified_table

THREE = LabelSet(("negative", "neutral / mixed", "positive"), ("neg", "mixed", "pos"))
WORDS = (
    ["awful", "bad", "poor", "sad"],
    ["plain", "usual", "fine", "so-so"],
    ["great", "good", "lovely", "happy"],
)
NOUNS = ["film", "meal", "book", "day", "song", "trip"]


def three_class_frame(rows_per_class: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (f"The {rng.choice(NOUNS)} was {rng.choice(WORDS[label])} today.", label)
        for label in range(3)
        for _ in range(rows_per_class)
    ]
    return pd.DataFrame(rows, columns=["sentence", "label"]).sample(frac=1, random_state=seed)


def log_preprocess_run(frames: dict[str, pd.DataFrame], label_set: LabelSet | None, tmp_path: Path) -> str:
    """A FINISHED preprocess run as the label-set contract describes it: splits with class indices, and the
    label set in schema.json and the label_names tag."""
    with mlflow.start_run() as run:
        mlflow.set_tag(STEP_TAG, "preprocess")
        for split, frame in frames.items():
            path = tmp_path / f"{split}.parquet"
            frame.to_parquet(path)
            mlflow.log_artifact(str(path), "data")
        schema = {"label_set": label_set.as_dict()} if label_set else {}
        mlflow.log_text(json.dumps(schema), SCHEMA_ARTIFACT)
        if label_set:
            mlflow.set_tag("label_names", label_set.names_json())
    return run.info.run_id


@pytest.fixture
def three_class_run(tracking_store, tmp_path):
    frames = {
        "train": three_class_frame(16, 0),
        "validation": three_class_frame(5, 1),
        "test": three_class_frame(4, 2),
    }
    return log_preprocess_run(frames, THREE, tmp_path)


def test_a_three_class_run_sizes_the_head_and_names_the_classes_everywhere(three_class_run, tracking_store):
    train.main(
        [
            *train_args(max_train_samples="-1", max_seq_length="16"),
            "--few-shot",
            "false",  # 16 rows per class: auto would train few-shot (test_few_shot.py)
            "--registered-model-name",
            "three",
            "--data-run-id",
            three_class_run,
        ]
    )
    run = mlflow.search_runs(
        experiment_ids=[tracking_store], filter_string=f"tags.`{STEP_TAG}` = 'train'", output_format="list"
    )[0]
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.tags["label_names"]) == list(THREE.names)
    assert run.data.tags["decision_calibration"] == "none"  # tune_threshold=true, but three classes
    assert "decision_shift" not in run.data.metrics
    for key in (
        "val_mcc",
        "val_f1_macro",
        "val_f1_weighted",
        "best_val_mcc",
        "variant_optimized_val_mcc_delta",
    ):
        assert key in run.data.metrics, key
    for name in ("negative", "neutral_mixed", "positive"):
        for metric in ("precision", "recall", "f1", "support"):
            assert f"val_{metric}_class_{name}" in run.data.metrics, (metric, name)
    assert run.data.metrics["val_support_class_positive"] == 5

    client = mlflow.MlflowClient()
    run_dir = Path(client.download_artifacts(run.info.run_id, "evaluation"))
    table = json.loads((run_dir / "confusion_matrix.json").read_text())
    assert table["labels"] == list(THREE.names) and np.array(table["matrix"]).shape == (3, 3)
    assert "neutral / mixed" in (run_dir / "classification_report.txt").read_text()

    version = client.get_model_version_by_alias("three", "challenger")
    assert version.tags["train_run_id"] == run.info.run_id
    assert json.loads(version.tags["label_names"]) == list(THREE.names)
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/three/{version.version}"))
    serving = json.loads((model_dir / "artifacts" / "serving_config.json").read_text())
    assert serving["labels"] == list(THREE.names)
    signature = mlflow.models.get_model_info(f"models:/three/{version.version}").signature
    assert signature.inputs.to_dict() == [{"type": "string", "required": True}]
    assert signature.outputs.input_names() == ["class", "name", "probabilities"]
    names = mlflow.pyfunc.load_model(f"models:/three/{version.version}").predict(["a fine film"])["name"]
    assert names.iloc[0] in THREE.names


def test_configure_head_sizes_the_model_and_writes_id2label():
    source = resolve_backbone("bundled")
    names = tuple(f"topic {i}" for i in range(7))
    config = train.configure_head(AutoConfig.from_pretrained(source), LabelSet.from_values(range(7), names))
    assert config.num_labels == 7
    assert config.id2label == dict(enumerate(names))
    assert config.label2id == {name: i for i, name in enumerate(names)}
    assert build_classifier(source, config, "mean").classifier.out_features == 7


def test_configure_head_for_cola_is_the_two_class_config_it_always_was():
    source = resolve_backbone("bundled")
    configured = train.configure_head(AutoConfig.from_pretrained(source), COLA_LABELS).to_diff_dict()
    before = AutoConfig.from_pretrained(source, num_labels=2).to_diff_dict()
    assert configured.pop("id2label") == {0: "unacceptable", 1: "acceptable"}
    configured.pop("label2id")
    before.pop("id2label", None), before.pop("label2id", None)
    assert configured == before


def test_a_checkpoint_with_a_head_of_another_size_is_a_clear_error(tmp_path):
    source = resolve_backbone("bundled")
    AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).save_pretrained(tmp_path)
    config = train.configure_head(AutoConfig.from_pretrained(tmp_path), THREE)
    with pytest.raises(StepInputError, match="pooling=mean"):
        train.load_classifier(str(tmp_path), config, "cls", str(tmp_path))
    assert train.load_classifier(str(tmp_path), config, "mean", str(tmp_path)).classifier.out_features == 3


def test_a_class_without_training_rows_fails_before_the_model_is_built(three_class_run):
    with pytest.raises(SystemExit, match=r"of 3 classes have no training rows .*raise max_train_samples"):
        train.main(
            [
                *train_args(max_train_samples="2", batch_size="1"),
                "--few-shot",
                "false",  # 16 rows per class: auto would train few-shot (test_few_shot.py)
                "--registered-model-name",
                "m",
                "--data-run-id",
                three_class_run,
            ]
        )


def test_labels_outside_the_label_set_name_the_fix(tracking_store, tmp_path):
    frame = three_class_frame(4, 0)
    frame.loc[frame.index[0], "label"] = 5  # a value, not an index of the three classes
    run_id = log_preprocess_run({"train": frame, "validation": three_class_frame(2, 1)}, THREE, tmp_path)
    with pytest.raises(SystemExit, match=r"not class indices 0..2 .*rerun preprocess"):
        train.main([*train_args(batch_size="1"), "--registered-model-name", "m", "--data-run-id", run_id])


def test_the_confusion_figure_stays_readable_at_twenty_classes():
    names = [f"class name {i}" for i in range(20)]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 20, 500)
    predictions = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 20, 500))
    figure = confusion_figure(labels, predictions, "20 classes", names)
    try:
        axis = figure.axes[0]
        assert len(axis.get_xticks()) == 20 and len(axis.get_yticks()) == 20
        assert [t.get_text() for t in axis.get_yticklabels()] == names
        assert all(t.get_rotation() == 45 for t in axis.get_xticklabels())
        width, height = figure.get_size_inches()
        assert width >= 8 and height >= 8  # the figure grows with the classes
        counts = [t for t in axis.texts]
        assert 0 < len(counts) <= 400  # counts written, empty cells left blank
        figure.canvas.draw()  # renders
    finally:
        plt.close(figure)
    long_names = [f"a rather long class name, number {i}" for i in range(20)]
    figure = confusion_figure(labels, predictions, "20 long names", long_names)
    shown = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    plt.close(figure)
    assert len(set(shown)) == 20 and all(len(label) <= 24 for label in shown)  # cut, still distinct
    table = confusion_table(labels, predictions, names)
    assert np.array(table["matrix"]).sum() == 500


def test_two_class_figure_keeps_its_size_and_200_classes_drop_the_counts():
    labels = np.array([0, 1, 1, 0])
    figure = confusion_figure(labels, labels, "two", COLA_LABELS.names)
    assert tuple(figure.get_size_inches()) == (4.5, 4.0) and len(figure.axes[0].texts) == 4
    plt.close(figure)
    labels = np.arange(200)
    figure = confusion_figure(labels, labels, "many", [str(i) for i in range(200)])
    assert not figure.axes[0].texts and max(figure.get_size_inches()) <= 32
    plt.close(figure)


def test_report_and_misclassified_samples_name_the_classes():
    labels = np.array([0, 1, 2, 2])
    logits = np.array([[3.0, 0, 0], [0, 0, 3.0], [0, 0, 3.0], [3.0, 0, 0]])
    report = classification_report(labels, logits.argmax(axis=1), THREE.names)
    assert "neutral / mixed" in report and "weighted avg" in report and "MCC" in report
    table = misclassified_table(["a", "b", "c", "d"], labels, logits, THREE.names)
    assert set(table["label_name"]) == {"neutral / mixed", "positive"}
    assert set(table["prediction_name"]) == {"positive", "negative"}
