"""The preprocess room's label set: derived from the training data (names or numbers, 2..MAX_CLASSES
classes) or fixed by `-P labels`, recorded in schema.json and the `label_names` tag, and every bad-label
case failing the run with the file, the class and the fix in its message and nothing logged as data."""

import hashlib
import json

import datasets
import mlflow
import numpy as np
import pandas as pd
import pytest

from sentclf.contract import LABEL_NAMES_TAG
from sentclf.data import read_label_set, read_split
from sentclf.schema import COLA_LABELS, LABEL_COLUMN, MAX_CLASSES, SPLITS, TEXT_COLUMN, LabelSet
from tests.unit import test_preprocess as base

import preprocess
import sources
from labels import metric_keys, parse_labels_parameter, resolve_labels, rows_needed, split_counts
from sources import load_source
from splitting import stratified_split
from validation import ValidationReport, validate_parts

# The shared tracking store and a fresh experiment per test (see test_preprocess).
store = base.store
experiment = base.experiment
TICKETS = ("billing", "refund", "login", "other")
COLUMNS = {"text_column": "text", "label_column": "topic"}


def labelled(rows: int, labels: list, seed: int, shares: list[float] | None = None) -> pd.DataFrame:
    """Random sentences under the user's column names text/topic, labels drawn from `labels`."""
    frame = base.synthetic_frame(rows, seed)
    rng = np.random.default_rng(seed)
    topic = rng.choice(np.array(labels, dtype=object), size=rows, p=shares)
    return pd.DataFrame({"text": frame[TEXT_COLUMN], "topic": topic})


def write(frame: pd.DataFrame, path) -> str:
    if str(path).endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return str(path)


def tickets_folder(tmp_path, train_rows: int = 400, test_rows: int = 80):
    """A team's folder: train.csv and a held-out test.csv, four string classes in column `topic`."""
    folder = tmp_path / "tickets"
    folder.mkdir()
    shares = [0.4, 0.3, 0.2, 0.1]
    write(labelled(train_rows, list(TICKETS), 1, shares), folder / "train.csv")
    write(labelled(test_rows, list(TICKETS), 2, shares), folder / "test.csv")
    return folder


def schema_of(run) -> dict:
    return json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/schema.json"))


def failed_message(experiment_id: str, match: str, **overrides) -> str:
    """Run the step expecting a blocking problem: the run FAILED, nothing under data/, no label tag;
    the message as the user sees it."""
    with pytest.raises(SystemExit, match=match) as failure:
        preprocess.main(base.step_argv(**overrides))
    run = base.newest_run(experiment_id)
    assert run.info.status == "FAILED"
    assert base.artifact_paths(run, "data") == set()
    assert "validation_report.json" in base.artifact_paths(run)
    assert LABEL_NAMES_TAG not in run.data.tags
    assert run.inputs.dataset_inputs == []
    return str(failure.value)


# ---- the label set from the data ---------------------------------------------------------------------------


def test_four_string_classes_from_a_folder_end_to_end(experiment, tmp_path):
    folder = tickets_folder(tmp_path)
    run = base.run_step(experiment, dataset=str(folder), **COLUMNS)

    expected = LabelSet(("billing", "login", "other", "refund"), ("billing", "login", "other", "refund"))
    assert read_label_set(run.info.run_id) == expected
    assert json.loads(run.data.tags[LABEL_NAMES_TAG]) == list(expected.names)
    schema = schema_of(run)
    assert schema["label_set"] == {"names": list(expected.names), "values": list(expected.values)}
    assert schema["columns"] == {TEXT_COLUMN: "string", LABEL_COLUMN: "int64"}
    assert list(schema["class_counts"]) == list(SPLITS)

    source = pd.read_csv(folder / "train.csv")
    for split in SPLITS:
        data = read_split(run.info.run_id, split)
        assert data[LABEL_COLUMN].dtype == "int64"
        assert set(data[LABEL_COLUMN]) == {0, 1, 2, 3}
        counts = schema["class_counts"][split]
        assert list(counts) == list(expected.names)
        assert sum(counts.values()) == len(data) == run.data.metrics[f"{split}_rows"]
        for index, name in enumerate(expected.names):
            assert counts[name] == int((data[LABEL_COLUMN] == index).sum())
            assert run.data.metrics[f"{split}_share_{name}"] == pytest.approx(counts[name] / len(data))
    # Index i means names[i]: a training sentence keeps its class through the encoding.
    train = read_split(run.info.run_id, "train")
    topic = dict(zip(source["text"], source["topic"], strict=True))
    assert all(topic[text] == expected.names[label] for text, label in train.itertuples(index=False))

    profile = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/profile.json"))
    assert list(profile["train"]["label_count"]) == list(expected.names)
    assert profile["train"]["label_share"]["billing"] == pytest.approx(
        run.data.metrics["train_share_billing"]
    )


def test_binary_string_labels_from_one_file(experiment, tmp_path):
    path = write(labelled(200, ["spam", "ham"], 3, [0.3, 0.7]), tmp_path / "sms.csv")
    run = base.run_step(experiment, dataset=path, **COLUMNS)
    assert read_label_set(run.info.run_id) == LabelSet(("ham", "spam"), ("ham", "spam"))
    assert {"train_share_ham", "train_share_spam", "test_share_spam"} <= set(run.data.metrics)
    assert run.data.metrics["test_share_spam"] == pytest.approx(
        run.data.metrics["train_share_spam"], abs=0.03
    )


def test_integer_labels_are_numbers_sorted_numerically_and_named_by_value(experiment, tmp_path):
    frame = labelled(300, [2, 10, 1], 4)
    frame["topic"] = frame["topic"].astype("int64")
    write(frame, tmp_path / "data.parquet")
    # In a text file the same classes are digit strings: still numbers, and still 1 < 2 < 10.
    as_text = frame.assign(topic=frame["topic"].astype(str))
    write(as_text, tmp_path / "data.csv")
    for name in ("data.parquet", "data.csv"):
        run = base.run_step(experiment, dataset=str(tmp_path / name), **COLUMNS)
        assert read_label_set(run.info.run_id) == LabelSet(("1", "2", "10"), (1, 2, 10))
        assert {"train_share_1", "train_share_2", "train_share_10"} <= set(run.data.metrics)


def test_labels_parameter_fixes_the_order(experiment, tmp_path):
    path = write(labelled(200, ["spam", "ham"], 3, [0.3, 0.7]), tmp_path / "sms.csv")
    run = base.run_step(experiment, dataset=path, labels="spam,ham", **COLUMNS)
    assert read_label_set(run.info.run_id) == LabelSet(("spam", "ham"), ("spam", "ham"))
    train = read_split(run.info.run_id, "train")
    source = pd.read_csv(path)
    spam = set(source.loc[source["topic"] == "spam", "text"])
    assert set(train.loc[train[LABEL_COLUMN] == 0, TEXT_COLUMN]) <= spam


def test_labels_parameter_names_integer_classes(experiment, tmp_path):
    path = write(labelled(200, ["0", "1"], 5), tmp_path / "reviews.csv")
    run = base.run_step(experiment, dataset=path, labels="0:negative, 1:positive", **COLUMNS)
    assert read_label_set(run.info.run_id) == LabelSet(("negative", "positive"), (0, 1))
    assert "train_share_positive" in run.data.metrics


def test_labels_parameter_makes_any_other_value_a_bad_row(experiment, tmp_path):
    frame = labelled(200, ["neg", "pos"], 6)
    frame.loc[[4, 9], "topic"] = ["neutral", "Pos"]
    path = write(frame, tmp_path / "reviews.csv")
    message = failed_message(
        experiment, "label not in the label set", dataset=path, labels="neg,pos", **COLUMNS
    )
    assert (
        f"{path}, column topic, row(s) 5, 10: label not in the label set ['neg', 'pos'] (neg, pos); found "
        "'neutral', 'Pos'. Fix these rows, or add the value(s) to -P labels" in message
    )


def test_cola_is_unchanged(experiment):
    """The shipped CoLA data with the defaults: CoLA's names, and the very rows of each split that the
    step produced before labels came from the data (sha256 of each split as CSV, measured then)."""
    run = base.run_step(experiment)
    assert read_label_set(run.info.run_id) == COLA_LABELS
    assert run.data.tags[LABEL_NAMES_TAG] == '["unacceptable", "acceptable"]'
    assert schema_of(run)["labels"] == {"0": "unacceptable", "1": "acceptable"}
    digests = {
        split: hashlib.sha256(read_split(run.info.run_id, split).to_csv(index=False).encode()).hexdigest()[
            :16
        ]
        for split in SPLITS
    }
    assert digests == {
        "train": "cc7e076bc19504ba",
        "validation": "7020d899fed08477",
        "test": "6727c6fd56cca01c",
    }
    assert run.data.metrics["train_share_unacceptable"] == pytest.approx(2275 / 7696)
    assert run.data.metrics["test_share_acceptable"] == pytest.approx(365 / 527)


def test_hub_class_names_name_the_classes(monkeypatch):
    def split(labels):
        features = datasets.Features(
            {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
        )
        return datasets.Dataset.from_dict(
            {"sentence": [f"s {i}" for i in range(len(labels))], "label": labels}, features=features
        )

    loaded = datasets.DatasetDict({"train": split([0, 1] * 10), "test": split([1, 0, 1])})
    monkeypatch.setattr(sources.hub, "offline_reason", lambda *_: None)
    monkeypatch.setattr(sources.hub.datasets, "load_dataset", lambda path, config: loaded)
    source = load_source("someone/reviews")
    report = ValidationReport()
    frames = {name: validate_parts(parts, name, report) for name, parts in source.parts.items()}
    assert resolve_labels(frames, None, 0.1, None, report) == LabelSet(("neg", "pos"), (0, 1))
    assert not report.errors


# ---- the labels parameter, metric keys, the stratification arithmetic ----------------------------------


def test_labels_parameter_parses():
    assert parse_labels_parameter("auto") is None
    assert parse_labels_parameter(" AUTO ") is None
    assert parse_labels_parameter("neg, pos ,neutral") == LabelSet(
        ("neg", "pos", "neutral"), ("neg", "pos", "neutral")
    )
    assert parse_labels_parameter("1,0") == LabelSet(("1", "0"), (1, 0))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0,neg", "mixes numbers and names"),
        ("neg,pos,neg", "repeats neg"),
        ("0:bad,1:bad", "repeats bad"),
        ("spam", "has 1 class"),
        ("0,1.5", "'1.5' is not a class"),
        ("a,,b", "'' is not a class"),
    ],
)
def test_bad_labels_parameter_is_rejected(value, message, capsys):
    with pytest.raises(SystemExit):
        preprocess.parse_args(base.step_argv(labels=value))
    assert message in capsys.readouterr().err


def test_metric_keys_are_mlflow_safe_and_distinct():
    assert metric_keys(COLA_LABELS) == ["unacceptable", "acceptable"]
    names = ("not spam", "spam!", "a/b", "a b", "é", "ok")
    keys = metric_keys(LabelSet.from_values(names))
    assert keys == ["not_spam", "spam", "a_b_2", "a_b_3", "class_4", "ok"]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("val_fraction", "test_fraction"), [(0.1, 0.1), (0.1, None), (0.2, 0.15), (0.3, None)]
)
def test_rows_needed_is_what_stratified_split_needs(val_fraction, test_fraction):
    needed = rows_needed(val_fraction, test_fraction)
    for rows in (needed - 1, needed, needed + 1):
        frame = pd.DataFrame({TEXT_COLUMN: [f"s{i}" for i in range(rows)], LABEL_COLUMN: [0] * rows})
        pool, test = stratified_split(frame, test_fraction, 0) if test_fraction else (frame, frame.iloc[:0])
        train, validation = stratified_split(pool, val_fraction, 0)
        parts = (len(train), len(validation), len(test))
        assert parts == split_counts(rows, val_fraction, test_fraction)
        assert all(parts[: 3 if test_fraction else 2]) == (rows >= needed)
    assert rows_needed(0.1, 0.1) == 7 and rows_needed(0.1, None) == 6


# ---- each bad-label case: the file, the class, the fix; nothing logged as data -----------------------------


def test_mixed_numbers_and_names_in_one_column(experiment, tmp_path):
    frame = labelled(100, list(TICKETS), 7)
    frame.loc[[2, 5], "topic"] = ["3", "0"]
    path = write(frame, tmp_path / "tickets.csv")
    message = failed_message(experiment, "mixes", dataset=path, **COLUMNS)
    assert (
        f"{path}, column topic, row(s) 3, 6: the label column mixes 2 number(s) (e.g. 3, 0) and 98 name(s)"
        in (message)
    )
    assert (
        "not both. Fix the rows listed (those holding a number), or give the classes with -P labels="
        in message
    )


def test_training_files_of_numbers_and_of_names(experiment, tmp_path):
    write(labelled(100, ["0", "1"], 8), tmp_path / "batch-1.csv")
    write(labelled(100, ["neg", "pos"], 9), tmp_path / "batch-2.csv")
    message = failed_message(experiment, "numbers in", dataset=str(tmp_path), **COLUMNS)
    assert (
        f"training files, column topic: numbers in {tmp_path / 'batch-1.csv'} but names in "
        f"{tmp_path / 'batch-2.csv'}: one label column holds either class numbers or class names" in message
    )


def test_a_held_out_class_that_training_lacks(experiment, tmp_path):
    folder = tickets_folder(tmp_path)
    test = pd.read_csv(folder / "test.csv")
    test.loc[[0, 7], "topic"] = "cancel"
    write(test, folder / "test.csv")
    message = failed_message(experiment, "cancel", dataset=str(folder), **COLUMNS)
    assert (
        f"{folder / 'test.csv'}, column topic, row(s) 1, 8: class 'cancel' is in this held-out file but "
        f"not in the training data ({folder / 'train.csv'}): the model cannot learn it. Add rows of "
        f"'cancel' to the training files, or remove these rows from {folder / 'test.csv'}" in message
    )


def test_a_class_too_small_to_stratify(experiment, tmp_path):
    frame = labelled(200, ["billing", "refund"], 10)
    frame.loc[[3, 50, 90], "topic"] = "login"
    path = write(frame, tmp_path / "tickets.csv")
    message = failed_message(experiment, "login", dataset=path, **COLUMNS)
    assert (
        f"{path}, column topic: class 'login' has 3 row(s); 7 are needed to stratify it into train, "
        "validation and test (val_fraction=0.1, test_fraction=0.1), or 6 for few-shot training without a "
        "validation split. Fix: add rows of class 'login', or drop the class (remove its rows)" in message
    )
    # With a held-out file, 6 rows reach train and validation, 2 are enough for few-shot (no validation
    # split: tests/unit/test_few_shot.py); one row is too few for either.
    frame.loc[[50, 90], "topic"] = "billing"  # 1 row
    write(frame, tmp_path / "train.csv")
    write(labelled(40, ["billing", "refund", "login"], 11), tmp_path / "test.csv")
    (tmp_path / "tickets.csv").unlink()
    message = failed_message(experiment, "login", dataset=str(tmp_path), **COLUMNS)
    assert (
        "class 'login' has 1 row(s); 6 are needed to stratify it into train and validation "
        "(val_fraction=0.1), or 2 for few-shot training without a validation split. Fix: add rows of class "
        "'login', or drop the class (remove its rows)" in message
    )


def test_a_class_missing_from_the_held_out_file(experiment, tmp_path):
    folder = tickets_folder(tmp_path)
    test = pd.read_csv(folder / "test.csv")
    write(test[test["topic"] != "other"], folder / "test.csv")
    message = failed_message(experiment, "other", dataset=str(folder), **COLUMNS)
    assert (
        f"{folder / 'test.csv'}, column topic: class 'other' has no rows in this held-out file, so its test "
        f"figures cannot be measured. Fix: add rows of it to {folder / 'test.csv'}" in message
    )


def test_one_class_only(experiment, tmp_path):
    path = write(labelled(50, ["billing"], 12), tmp_path / "tickets.csv")
    message = failed_message(experiment, "only the class", dataset=path, **COLUMNS)
    assert (
        f"{path}, column topic: only the class 'billing' in the training data: a classifier needs at least 2 "
        "classes. Add rows of the other class(es), or check that -P label_column names the label column (it "
        "is 'topic')" in message
    )


def test_more_classes_than_supported(experiment, tmp_path):
    frame = labelled(MAX_CLASSES + 1, ["x"], 13)
    frame["topic"] = [f"id-{i}" for i in range(len(frame))]
    path = write(frame, tmp_path / "tickets.csv")
    message = failed_message(experiment, "classes in the training data", dataset=path, **COLUMNS)
    assert (
        f"{path}, column topic: {MAX_CLASSES + 1} classes in the training data (e.g. 'id-0', 'id-1', "
        f"'id-10'); at most {MAX_CLASSES} are supported. Check that -P label_column names the label column"
        in message
    )


def test_an_empty_label_names_the_users_column(experiment, tmp_path):
    frame = labelled(100, list(TICKETS), 14)
    frame.loc[6, "topic"] = ""
    path = write(frame, tmp_path / "tickets.csv")
    message = failed_message(experiment, "column topic", dataset=path, **COLUMNS)
    assert f"{path}, column topic, row(s) 7: label is empty" in message
    assert "column label" not in message


# ---- drift over N classes ------------------------------------------------------------------------------


def test_label_drift_compares_classes_by_name(experiment, tmp_path):
    folder = tickets_folder(tmp_path)
    base.run_step(experiment, dataset=str(folder), **COLUMNS)
    # The same data with the classes in another order: the indexes differ, the shares by name do not.
    again = base.run_step(experiment, dataset=str(folder), labels="refund,other,login,billing", **COLUMNS)
    assert again.data.params["drift_reference"] == "previous"
    assert again.data.metrics["drift_label_psi"] == pytest.approx(0.0, abs=1e-9)
    assert again.data.metrics["drift_label_set_changed"] == 0.0


def test_a_changed_label_set_is_reported_not_a_crash(experiment, tmp_path):
    sms = write(labelled(200, ["spam", "ham"], 3), tmp_path / "sms.csv")
    base.run_step(experiment, dataset=sms, **COLUMNS)
    folder = tickets_folder(tmp_path)
    message = failed_message(
        experiment, "label set changed", dataset=str(folder), fail_on_drift="true", **COLUMNS
    )
    assert (
        "label set changed (added ['billing', 'login', 'other', 'refund'], removed ['ham', 'spam'])"
        in message
    )

    run = base.run_step(experiment, dataset=str(folder), **COLUMNS)  # fail_on_drift=false: reported
    assert run.data.params["drift_reference_run_id"] != run.info.run_id
    assert run.data.metrics["drift_label_set_changed"] == 1.0
    assert "drift_label_psi" not in run.data.metrics and "drift_length_ks" in run.data.metrics
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/drift_report.json"))
    assert report["label_set"] == {
        "change": "label set changed",
        "reference": ["ham", "spam"],
        "current": ["billing", "login", "other", "refund"],
        "added": ["billing", "login", "other", "refund"],
        "removed": ["ham", "spam"],
    }
    assert set(report["label_shares"]["reference"]) == {"ham", "spam"}
