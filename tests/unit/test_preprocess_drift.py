"""The preprocess room's drift check: the statistics, the reference it finds, and fail_on_drift."""

import json
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest

from sentclf.contract import STEP_TAG
from sentclf.schema import COLA_LABELS, LABEL_COLUMN, SPLITS
from tests.unit import test_preprocess as base

from drift import GATED_STATISTICS, drift_statistics, ks_statistic, psi, token_lengths, total_variation
from profiling import backbone_tokenizer
from sources import load_cola
from validation import ValidationReport, validate_frame

# The shared tracking store and a fresh experiment per test (see test_preprocess).
store = base.store
experiment = base.experiment
THRESHOLD = 0.2  # MLproject's default drift_threshold


@pytest.fixture(scope="module")
def cola_train():
    frame = validate_frame(load_cola().frames["train"], "train", "in_domain_train.tsv", ValidationReport())
    # A third of CoLA's train file: plenty for the statistics, and a third of the tokenizing.
    return frame.sample(n=3000, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def tokenizer():
    return backbone_tokenizer()


def write_csv(frame, path):
    frame.to_csv(path, index=False)
    return str(path)


def test_ks_statistic_is_the_largest_gap_between_the_empirical_cdfs():
    rng = np.random.default_rng(0)
    for _ in range(5):
        sample, other = rng.integers(1, 30, rng.integers(5, 200)), rng.integers(3, 40, rng.integers(5, 200))
        # The definition, evaluated at every observed value (scipy.stats.ks_2samp agrees; not a dependency).
        points = np.concatenate([sample, other])
        gaps = [abs((sample <= x).mean() - (other <= x).mean()) for x in points]
        assert ks_statistic(sample, other) == pytest.approx(max(gaps))
    assert ks_statistic(np.array([1, 2, 3]), np.array([1, 2, 3])) == 0.0
    assert ks_statistic(np.array([1, 2]), np.array([5, 6])) == 1.0


def test_psi_and_total_variation_of_known_shares():
    even, skewed, flipped = np.array([0.5, 0.5]), np.array([0.7, 0.3]), np.array([0.3, 0.7])
    assert psi(even, even) == 0.0
    assert total_variation(skewed, flipped) == pytest.approx(0.4)
    assert psi(skewed, flipped) == pytest.approx(0.8 * np.log(7 / 3))
    assert np.isfinite(psi(np.array([1.0, 0.0]), even))  # an empty bin is floored, not infinite


def test_a_resample_of_the_same_data_stays_below_the_threshold(cola_train, tokenizer):
    reference = cola_train.sample(frac=0.5, random_state=1)
    current = cola_train.drop(reference.index).sample(frac=1.0, replace=True, random_state=2)
    statistics = drift_statistics(current, reference, tokenizer, COLA_LABELS, COLA_LABELS)["statistics"]
    assert all(statistics[name] < THRESHOLD / 4 for name in GATED_STATISTICS), statistics
    assert statistics["drift_label_tvd"] < 0.02


def test_long_sentences_or_flipped_labels_exceed_the_threshold(cola_train, tokenizer):
    long = cola_train[token_lengths(cola_train, tokenizer) >= 12]
    statistics = drift_statistics(long, cola_train, tokenizer, COLA_LABELS, COLA_LABELS)["statistics"]
    assert statistics["drift_length_psi"] > THRESHOLD and statistics["drift_length_ks"] > THRESHOLD

    unacceptable = cola_train[cola_train[LABEL_COLUMN] == 0]
    acceptable = cola_train[cola_train[LABEL_COLUMN] == 1].sample(
        n=len(unacceptable) * 3 // 7, random_state=0
    )
    flipped = unacceptable.sample(frac=1.0, random_state=0).iloc[: len(acceptable) * 7 // 3]
    report = drift_statistics(
        pd.concat([flipped, acceptable]), cola_train, tokenizer, COLA_LABELS, COLA_LABELS
    )
    assert report["statistics"]["drift_label_psi"] > THRESHOLD
    assert report["label_shares"]["current"]["unacceptable"] == pytest.approx(0.7, abs=0.01)


def test_new_vocabulary_rate_counts_word_types_unseen_in_the_reference(tokenizer):
    reference = base.synthetic_frame(50, seed=1)
    current = reference.assign(sentence=reference["sentence"] + " Zyxwv qwert")
    statistics = drift_statistics(current, reference, tokenizer, COLA_LABELS, COLA_LABELS)["statistics"]
    types = {w for text in current["sentence"] for w in text.lower().replace(".", " ").split()}
    assert statistics["drift_new_vocab_rate"] == pytest.approx(2 / len(types))


def test_reference_is_none_then_the_previous_successful_run(experiment, tmp_path):
    dataset = write_csv(base.synthetic_frame(300, seed=1), tmp_path / "data.csv")
    first = base.run_step(experiment, dataset=dataset)
    assert first.data.params["drift_reference"] == "none"
    assert not any(name.startswith("drift_") for name in first.data.metrics)
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{first.info.run_id}/drift_report.json"))
    assert report["reference"]["kind"] == "none"

    second = base.run_step(experiment, dataset=dataset, seed=7)
    assert second.data.params["drift_reference"] == "previous"
    assert second.data.params["drift_reference_run_id"] == first.info.run_id
    assert all(second.data.metrics[name] < THRESHOLD for name in GATED_STATISTICS)


def register_champion(data_run_id: str) -> str:
    """A registered model whose `champion` was trained (per its run's data_run_id) on `data_run_id`."""
    name = f"cola-{uuid.uuid4().hex[:8]}"
    with mlflow.start_run() as train_run:
        mlflow.set_tag(STEP_TAG, "train")
        mlflow.log_param("data_run_id", data_run_id)
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{train_run.info.run_id}/model", train_run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return name


def test_the_champions_training_data_comes_before_the_previous_run(experiment, tmp_path):
    trained_on = base.run_step(
        experiment, dataset=write_csv(base.synthetic_frame(300, 1), tmp_path / "a.csv")
    )
    base.run_step(experiment, dataset=write_csv(base.synthetic_frame(300, 2, 15, 30), tmp_path / "b.csv"))
    model_name = register_champion(trained_on.info.run_id)

    run = base.run_step(
        experiment,
        dataset=write_csv(base.synthetic_frame(300, 3), tmp_path / "c.csv"),
        registered_model_name=model_name,
    )
    assert run.data.params["drift_reference"] == "champion"
    assert run.data.params["drift_reference_run_id"] == trained_on.info.run_id
    assert run.data.metrics["drift_length_ks"] < THRESHOLD  # same generator as a.csv, unlike b.csv


def test_fail_on_drift_fails_before_any_data_is_logged(experiment, tmp_path):
    base.run_step(experiment, dataset=write_csv(base.synthetic_frame(300, seed=1), tmp_path / "a.csv"))
    shifted = write_csv(base.synthetic_frame(300, seed=2, min_words=15, max_words=30), tmp_path / "long.csv")

    failed = base.assert_fails_without_data(
        experiment,
        r"data drift against the previous successful preprocess run \w+: .*drift_length_ks=\d\.\d+.* > "
        r"drift_threshold=0.2; nothing was logged as data",
        dataset=shifted,
        fail_on_drift="true",
    )
    assert "drift_report.json" in base.artifact_paths(failed)
    assert failed.data.metrics["drift_length_psi"] > THRESHOLD
    assert failed.inputs.dataset_inputs == []

    warned = base.run_step(experiment, dataset=shifted)  # fail_on_drift=false: a warning, then the data
    assert warned.data.metrics["drift_length_ks"] > THRESHOLD
    assert base.artifact_paths(warned, "data") == {f"data/{split}.parquet" for split in SPLITS}
