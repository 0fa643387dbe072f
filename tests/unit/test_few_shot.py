"""Few-label training (train/few_shot.py): the mode's choice, SetFit's pair sampling, the head folded into
the exported linear layer, and a tiny data set that preprocess lets through without a validation split
and train turns into the same kind of registered version, cross-validated and tagged few-shot; with a
validation split, the shipped model trains on its rows too."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from sentclf.backbone import resolve_backbone
from sentclf.contract import STEP_TAG, TRAINING_MODE_TAG, TRAINING_ROWS_TAG, VALIDATION_MODE_TAG
from sentclf.text_model import TextClassifier
from tests.unit.test_model_card import card
from tests.unit.test_preprocess import step_argv
from tests.unit.test_train import train_args

import few_shot
import preprocess
import train
from training import EncodedSplit, predict

TOPICS = {
    "billing": ["my invoice is wrong", "I was charged twice", "refund the extra fee", "the bill is too high"],
    "login": ["I cannot sign in", "password reset fails", "my account is locked", "two factor code missing"],
    "shipping": [
        "the parcel is late",
        "where is my package",
        "tracking shows nothing",
        "delivery never came",
    ],
}


@pytest.fixture(autouse=True)
def hub_offline_for_this_test_only(monkeypatch):
    """Resolving the bundled backbone sets HF_HUB_OFFLINE=1 in this process (as the step does); set here,
    monkeypatch restores it afterwards, so later tests (test_preprocess_sources' offline messages) do not
    inherit it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def topic_folder(tmp_path: Path) -> Path:
    """train.csv with four rows per class (too few to hold out validation) and a held-out test.csv."""
    rows = [(text, label) for label, texts in TOPICS.items() for text in texts]
    pd.DataFrame(rows, columns=["text", "topic"]).to_csv(tmp_path / "train.csv", index=False)
    test = [("invoice charged twice again", "billing"), ("cannot sign in today", "login")]
    test += [("package delivery is late", "shipping")]
    pd.DataFrame(test, columns=["text", "topic"]).to_csv(tmp_path / "test.csv", index=False)
    return tmp_path


CONTRASTIVE_CALLS: list[int] = []  # the iterations each skipped phase was asked for
CONTRASTIVE_ROWS: list[int] = []  # and the rows it was given


def skipped_contrastive_fit(
    model, split, batch_size, seed, pad_id, log_step=None, iterations=few_shot.PAIR_ITERATIONS
) -> dict[str, float]:
    """The contrastive phase's summary without its training (seconds of CPU per fold otherwise)."""
    CONTRASTIVE_CALLS.append(iterations)
    CONTRASTIVE_ROWS.append(len(split))
    return {"contrastive_pairs": 0, "contrastive_loss": 0.0, "contrastive_seconds": 0.0}


def finished_train_run(experiment_id: str):
    """The newest finished train step run of the experiment."""
    return mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{STEP_TAG}` = 'train' and attributes.status = 'FINISHED'",
        output_format="list",
    )[0]


@pytest.fixture
def few_shot_data_run(tracking_store, tmp_path, monkeypatch):
    # The pipeline around the contrastive phase is what this data run tests (CV folds, head, export,
    # registration); the phase itself runs for real in test_the_contrastive_phase_tunes_the_encoder.
    monkeypatch.setattr(few_shot, "contrastive_fit", skipped_contrastive_fit)
    monkeypatch.setattr(few_shot, "CV_FOLDS", 2)
    preprocess.main(step_argv(dataset=str(topic_folder(tmp_path)), text_column="text", label_column="topic"))
    return mlflow.search_runs(experiment_ids=[tracking_store], output_format="list")[0]


def test_auto_is_few_shot_below_the_threshold_and_true_false_force_it():
    assert few_shot.use_few_shot("auto", np.array([40, 8]), 32)
    assert not few_shot.use_few_shot("auto", np.array([40, 32]), 32)
    assert few_shot.use_few_shot("true", np.array([500, 500]), 32)
    assert not few_shot.use_few_shot("false", np.array([2, 2]), 32)


def test_pairs_are_drawn_as_setfit_draws_them():
    labels = np.array([0, 0, 0, 1, 1, 2])
    pairs = few_shot.sample_pairs(labels, 3, np.random.default_rng(0))
    a, b, same = pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2]
    assert np.array_equal(labels[a] == labels[b], same == 1.0)
    assert not np.any(a == b)
    # Each row anchors a negative per iteration, and a positive when its class has another row.
    assert (same == 0).sum() == 3 * len(labels) and (same == 1).sum() == 3 * (len(labels) - 1)


def test_the_logistic_head_is_the_exported_linear_layer():
    from sklearn.linear_model import LogisticRegression

    source = resolve_backbone("bundled")
    tokenizer = AutoTokenizer.from_pretrained(source)
    texts = [text for texts in TOPICS.values() for text in texts][:8]
    for classes, labels in ((2, np.array([0, 0, 0, 0, 1, 1, 1, 1])), (3, np.array([0, 0, 0, 1, 1, 1, 2, 2]))):
        config = AutoConfig.from_pretrained(source, num_labels=classes)
        model = few_shot.FewShotClassifier(source, config).eval()
        split = EncodedSplit(tokenizer(texts, max_length=32, truncation=True)["input_ids"], labels, texts)
        few_shot.fit_head(model, split, classes, 0, tokenizer.pad_token_id)
        logits, _ = predict(model, split, 8, tokenizer.pad_token_id)
        features = few_shot.embeddings(model, split, tokenizer.pad_token_id)
        expected = (
            LogisticRegression(max_iter=1000, random_state=0).fit(features, labels).predict_proba(features)
        )
        np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), expected, atol=1e-5)


def test_confident_rows_are_the_surest_share_of_each_predicted_class():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.45, 0.55]])
    # class 0 (rows 0-2): the surest half, rounded up, is rows 0 and 2; class 1 (rows 3-4): row 3.
    np.testing.assert_array_equal(few_shot.confident_rows(probabilities, 0.5), [0, 2, 3])
    np.testing.assert_array_equal(few_shot.confident_rows(probabilities, 1.0), [0, 1, 2, 3, 4])


def test_the_self_trained_head_labels_unlabelled_rows_better_than_the_few_shot_head():
    """Two clusters a few labelled rows from each; the few-shot head's boundary is off (the unlabelled
    rows near it get the wrong class). Refit on its confident half of each class, it moves to where the
    unlabelled rows say the clusters part."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 200)
    unlabelled = rng.normal(0, 1, (400, 2)) + np.where(truth[:, None] == 0, [-2.0, 0.0], [2.0, 0.0])
    labelled = np.array([[-2.0, 0.0], [-2.2, 0.3], [2.0, 0.0], [1.8, -0.3]])
    labels = np.array([0, 0, 1, 1])
    shifted = np.stack([-(unlabelled[:, 0] - 1.5), unlabelled[:, 0] - 1.5], axis=1)  # boundary at x = 1.5
    logits, rounds = few_shot.self_trained_logits(labelled, labels, unlabelled, shifted, seed=0)
    assert logits.shape == (400, 2) and logits.dtype == np.float32
    assert 1 < rounds < few_shot.SELF_TRAINING_MAX_ROUNDS  # refit until the labels settled
    np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1, atol=1e-5)  # log-probabilities
    before, after = np.mean(shifted.argmax(axis=1) == truth), np.mean(logits.argmax(axis=1) == truth)
    assert before < 0.85 and after > before + 0.05


def test_the_contrastive_phase_tunes_the_encoder():
    source = resolve_backbone("bundled")
    tokenizer = AutoTokenizer.from_pretrained(source)
    texts = [text for texts in TOPICS.values() for text in texts[:2]]
    split = EncodedSplit(
        tokenizer(texts, max_length=16, truncation=True)["input_ids"], np.repeat([0, 1, 2], 2), texts
    )
    model = few_shot.FewShotClassifier(source, AutoConfig.from_pretrained(source, num_labels=3))
    before = [p.detach().clone() for p in model.encoder.parameters()]
    # one iteration: 6 rows, 12 pairs, one optimizer step of 16
    summary = few_shot.contrastive_fit(model, split, 16, 0, tokenizer.pad_token_id, iterations=1)
    assert summary["contrastive_pairs"] == 12 and np.isfinite(summary["contrastive_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters(), strict=True))


def test_a_tiny_data_set_is_trained_few_shot_into_the_usual_registered_version(
    few_shot_data_run, tracking_store
):
    data_run = few_shot_data_run
    assert data_run.data.metrics["validation_rows"] == 0 and data_run.data.metrics["train_rows"] == 12
    assert data_run.data.metrics["validation_no_validation_split_rows"] == 0  # a warning, no rows named
    # An ordinary fine-tune refuses the run, naming the fix; auto trains it few-shot.
    with pytest.raises(SystemExit, match="no validation split .* use few_shot=auto or true"):
        train.main([*train_args(), "--registered-model-name", "few", "--few-shot", "false"])
    CONTRASTIVE_CALLS.clear()
    train.main([*train_args(), "--registered-model-name", "few", "--few-shot-iterations", "3"])
    assert CONTRASTIVE_CALLS == [3, 3, 3]  # two cross-validation folds and the shipped model
    run = finished_train_run(tracking_store)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags[TRAINING_MODE_TAG] == "few_shot" and tags[TRAINING_ROWS_TAG] == "12"
    assert tags[VALIDATION_MODE_TAG] == "cross_validation_2_folds"
    assert tags["decision_calibration"] == "none"
    assert {"val_accuracy", "val_mcc", "contrastive_loss", "parity_max_abs_diff"} <= set(metrics)
    assert metrics["parity_max_abs_diff"] <= 1e-4
    version = mlflow.MlflowClient().get_model_version_by_alias("few", "challenger")
    model_dir = mlflow.artifacts.download_artifacts(f"models:/few/{version.version}")
    sentences = ["my bill has a wrong charge", "the courier lost my parcel"]
    predicted = mlflow.pyfunc.load_model(f"models:/few/{version.version}").predict(sentences)
    assert set(predicted["name"]) <= set(TOPICS)
    assert predicted["class"].tolist() == TextClassifier.from_dir(model_dir).score(sentences).labels.tolist()


def test_with_a_validation_split_the_shipped_model_trains_on_its_rows_too(
    tracking_store, tmp_path, monkeypatch
):
    """One row per class held out: a model trained on the other rows scores it (the validation figures and
    the evaluation artifacts), then the shipped model trains on every labelled row."""
    monkeypatch.setattr(few_shot, "contrastive_fit", skipped_contrastive_fit)
    folder = str(topic_folder(tmp_path))
    preprocess.main(step_argv(dataset=folder, text_column="text", label_column="topic", val_fraction=0.25))
    data_run = mlflow.search_runs(experiment_ids=[tracking_store], output_format="list")[0]
    assert (data_run.data.metrics["train_rows"], data_run.data.metrics["validation_rows"]) == (9, 3)
    CONTRASTIVE_ROWS.clear()
    train.main([*train_args(), "--registered-model-name", "few-held", "--few-shot-iterations", "3"])
    assert CONTRASTIVE_ROWS == [9, 12]  # the validating model, then the shipped one on all 12 rows
    run = finished_train_run(tracking_store)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags[TRAINING_ROWS_TAG] == "12" and tags[VALIDATION_MODE_TAG] == "held_out"
    assert {"val_accuracy", "val_mcc", "parity_max_abs_diff"} <= set(metrics)


def test_the_model_card_says_few_shot_and_on_how_many_rows(tracking_store):
    text = card(**{TRAINING_MODE_TAG: "few_shot", TRAINING_ROWS_TAG: "16", VALIDATION_MODE_TAG: "held_out"})
    assert "- training: **few-shot** (contrastive pairs + logistic head) on 16 labelled rows" in text
    assert "fine-tune (the train run predates" in card()


def test_few_shot_refuses_multi_label_and_int8_naming_the_fix():
    from argparse import Namespace

    from sentclf.schema import LABEL_COLUMN, LabelSet

    label_set = LabelSet.from_values([0, 1])
    frame = pd.DataFrame({LABEL_COLUMN: [0, 0, 1, 1]})
    args = Namespace(few_shot="true", few_shot_threshold=32, serve_variant="fp32")
    with pytest.raises(train.StepInputError, match="label_mode=multi.*use few_shot=false or auto"):
        train.choose_few_shot(args, frame, label_set, multi=True)
    args.few_shot = "auto"  # auto fine-tunes multi-label data
    assert not train.choose_few_shot(args, frame, label_set, multi=True)
    args.serve_variant = "int8"
    with pytest.raises(train.StepInputError, match="serves fp32 only: use serve_variant=fp32 or optimized"):
        train.choose_few_shot(args, frame, label_set, multi=False)


def test_a_fold_of_a_sentence_pair_split_keeps_its_segments():
    split = EncodedSplit(
        [[1, 2], [3, 4, 5], [6]], np.array([0, 1, 0]), ["a", "b", "c"], [[0, 1], [0, 0, 1], [0]]
    )
    fold = few_shot.subset(split, np.array([2, 1]))
    assert fold.input_ids == [[6], [3, 4, 5]] and fold.token_type_ids == [[0], [0, 0, 1]]
    assert few_shot.subset(EncodedSplit([[1]], np.array([0]), ["a"]), np.array([0])).token_type_ids is None
