"""The preprocess room: sources, validation, splitting, and the step run against a real tracking store."""

import mlflow
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN
from sentclf.tracking import StepInputError

import preprocess
from sources import load_cola, read_cola_tsv
from splitting import stratified_split
from validation import ValidationReport, validate_frame


def write_tsv(path, rows):
    path.write_text("".join(f"src\t{label}\t\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


def test_shipped_cola_has_the_documented_row_counts():
    source = load_cola()
    assert len(source.frames["train"]) == 8551
    assert len(source.frames["test"]) == 527


def test_non_utf8_bytes_are_reported_with_their_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"s\t1\t\tgood sentence\ns\t0\t\tbad \xff byte\n")
    with pytest.raises(StepInputError, match=r"line 2 is not valid UTF-8"):
        read_cola_tsv(path)


@pytest.mark.parametrize(
    ("rows", "check"),
    [
        ([(1, "fine"), (2, "label two"), (0, "ok"), (0, "ok too"), (1, "yes")], "bad_label"),
        ([(1, "fine"), (0, "   "), (0, "ok"), (1, "yes")], "empty_text"),
        ([(1, "fine"), (1, "yes"), (1, "more"), (0, "only one zero")], "too_few_rows_per_class"),
    ],
)
def test_blocking_problems_name_file_row_and_column(tmp_path, rows, check):
    frame = read_cola_tsv(write_tsv(tmp_path / "in.tsv", rows))
    report = ValidationReport()
    validate_frame(frame, "train", "in.tsv", report)
    assert [p.check for p in report.errors] == [check]
    with pytest.raises(StepInputError, match="in.tsv"):
        report.raise_if_blocking()


def test_bad_label_message_names_the_row(tmp_path):
    frame = read_cola_tsv(write_tsv(tmp_path / "in.tsv", [(1, "a"), (1, "b"), (7, "c"), (0, "d"), (0, "e")]))
    report = ValidationReport()
    validate_frame(frame, "train", "in.tsv", report)
    assert "in.tsv, column label, row(s) 3" in report.errors[0].describe()


def test_duplicates_and_overlap_are_warnings_not_errors():
    train = pd.DataFrame({TEXT_COLUMN: ["a", "a", "b", "c"], LABEL_COLUMN: ["1", "1", "0", "0"]})
    report = ValidationReport()
    train = validate_frame(train, "train", "train.tsv", report)
    assert [p.check for p in report.problems] == ["duplicate_row"]
    test = pd.DataFrame({TEXT_COLUMN: ["b", "z"], LABEL_COLUMN: [0, 1]})
    report.check_cross_split_overlap({"train": train, "validation": train.iloc[:0], "test": test})
    assert "overlap_test_train" in [p.check for p in report.problems]
    assert not report.errors


@settings(max_examples=30, deadline=None)
@given(
    labels=st.lists(st.integers(0, 1), min_size=20, max_size=300),
    fraction=st.floats(0.05, 0.45),
    seed=st.integers(0, 2**16),
)
def test_stratified_split_is_a_deterministic_stratified_partition(labels, fraction, seed):
    frame = pd.DataFrame({TEXT_COLUMN: [f"s{i}" for i in range(len(labels))], LABEL_COLUMN: labels})
    rest, held_out = stratified_split(frame, fraction, seed)
    assert set(rest[TEXT_COLUMN]).isdisjoint(held_out[TEXT_COLUMN])
    assert len(rest) + len(held_out) == len(frame)
    for label in (0, 1):
        count = int((frame[LABEL_COLUMN] == label).sum())
        assert int((held_out[LABEL_COLUMN] == label).sum()) == int(round(count * fraction))
    again_rest, again_held_out = stratified_split(frame, fraction, seed)
    assert again_held_out[TEXT_COLUMN].tolist() == held_out[TEXT_COLUMN].tolist()
    assert again_rest[TEXT_COLUMN].tolist() == rest[TEXT_COLUMN].tolist()


def test_step_logs_splits_and_profile(tracking_store):
    preprocess.main(["--dataset", "cola", "--val-fraction", "0.1", "--seed", "1"])
    run = mlflow.search_runs(experiment_ids=[tracking_store], output_format="list")[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_rows"] == 527
    assert run.data.metrics["train_rows"] + run.data.metrics["validation_rows"] == 8551
    assert (
        abs(run.data.metrics["validation_share_acceptable"] - run.data.metrics["train_share_acceptable"])
        < 0.01
    )
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "data")}
    assert names == {"data/train.parquet", "data/validation.parquet", "data/test.parquet"}
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"schema.json", "profile.json", "validation_report.json", "profile", "logs"} <= logged


def test_step_with_bad_data_fails_and_logs_no_data(tracking_store, tmp_path, monkeypatch):
    bad_dir = tmp_path / "cola"
    bad_dir.mkdir()
    write_tsv(bad_dir / "in_domain_train.tsv", [(1, "a"), (1, "b"), (0, "c"), (0, ""), (0, "e")])
    write_tsv(bad_dir / "in_domain_dev.tsv", [(1, "x"), (1, "y"), (0, "z"), (0, "w")])
    monkeypatch.setattr(preprocess, "load_source", lambda dataset: load_cola(bad_dir))
    with pytest.raises(SystemExit, match="row\\(s\\) 4: text is empty"):
        preprocess.main(["--dataset", "cola", "--val-fraction", "0.2", "--seed", "1"])
    run = mlflow.search_runs(experiment_ids=[tracking_store], output_format="list")[0]
    assert run.info.status == "FAILED"
    assert mlflow.MlflowClient().list_artifacts(run.info.run_id, "data") == []
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)} >= {
        "validation_report.json"
    }


def test_unknown_dataset_is_a_clear_error(tracking_store):
    with pytest.raises(SystemExit, match="unknown dataset 'nope'"):
        preprocess.main(["--dataset", "nope", "--val-fraction", "0.1", "--seed", "1"])
