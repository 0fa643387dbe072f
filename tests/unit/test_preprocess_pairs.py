"""Sentence pairs in the preprocess room (-P text_pair_column=...): the second text is read beside the
first, a missing or empty one is a row error naming the file, row and column, the splits keep it as
`text_pair`, schema.json and the run's tag name the column; the shipped example file is what its
generator writes."""

import importlib.util
import json

import mlflow
import pandas as pd
import pytest

from sentclf.contract import TEXT_PAIR_TAG
from sentclf.data import read_split, read_text_pair_column
from sentclf.schema import TEXT_COLUMN, TEXT_PAIR_COLUMN, TEXT_PAIR_KEY
from tests.conftest import REPO_ROOT
from tests.unit.test_preprocess import (  # noqa: F401 (fixtures)
    assert_fails_without_data,
    experiment,
    run_step,
    store,
)

from sources import Columns
from sources.readers import read_file
from splitting import drop_test_overlap
from text_pairs import model_texts, parse_text_pair_column
from validation import ValidationReport, validate_parts

EXAMPLE = REPO_ROOT / "examples" / "pairs" / "questions.csv"
PAIRS = Columns("question1", "is_duplicate", (), "question2")


def test_the_example_file_is_what_its_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_pairs", EXAMPLE.with_name("make_pairs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert EXAMPLE.read_text(encoding="utf-8") == module.render(module.make_rows())
    frame = pd.read_csv(EXAMPLE)
    assert len(frame) == module.ROWS and frame["is_duplicate"].mean() == 0.5
    assert not frame.duplicated(["question1", "question2"]).any()


@pytest.mark.parametrize("value", ["", "none", "None", " "])
def test_no_second_column_means_single_sentences(value: str) -> None:
    assert parse_text_pair_column(value) is None
    assert parse_text_pair_column(" question2 ") == "question2"


def test_a_missing_or_empty_second_text_is_a_row_error_naming_file_row_and_column(tmp_path) -> None:
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "question1,question2,is_duplicate\nhow do I pay?,how can I pay?,1\nwhere is it?,  ,0\n"
        "what is it?,who is it?,0\n"
    )
    parquet_path = tmp_path / "more.parquet"
    pd.DataFrame(
        {"question1": ["a?", "b?", "c?"], "question2": ["x?", None, "z?"], "is_duplicate": [1, 0, 1]}
    ).to_parquet(parquet_path)
    report = ValidationReport()
    frame = validate_parts(
        [(path.name, read_file(path, PAIRS)) for path in (csv_path, parquet_path)], "train", report
    )
    assert list(frame.columns[:2]) == [TEXT_COLUMN, TEXT_PAIR_COLUMN]
    found = {(p.check, p.origin, p.column, tuple(p.rows)) for p in report.errors}
    assert found == {
        ("empty_text_pair", "pairs.csv", "question2", (2,)),
        ("missing_text_pair", "more.parquet", "question2", (2,)),
    }
    assert "pairs.csv, column question2, row(s) 2" in report.errors[0].describe()


def test_the_step_keeps_the_pair_and_names_its_column(experiment) -> None:  # noqa: F811
    run = run_step(
        experiment,
        dataset=str(EXAMPLE),
        text_column="question1",
        label_column="is_duplicate",
        labels="0:different,1:duplicate",
        text_pair_column="question2",
    )
    run_id = run.info.run_id
    assert run.data.tags[TEXT_PAIR_TAG] == "question2"
    assert read_text_pair_column(run_id) == "question2"
    train = read_split(run_id, "train")
    assert list(train.columns) == [TEXT_COLUMN, TEXT_PAIR_COLUMN, "label"]
    source = pd.read_csv(EXAMPLE).set_index("question1", drop=False)
    assert (train[TEXT_PAIR_COLUMN].str.len() > 0).all()
    assert len(set(zip(train[TEXT_COLUMN], train[TEXT_PAIR_COLUMN], strict=True))) == len(train)
    assert set(train[TEXT_COLUMN]) <= set(source.index)
    # The profile measures a pair as both texts: longer than its first text alone.
    profile = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/profile.json"))
    assert profile["train"]["tokens"]["mean"] > 14
    assert model_texts(train.head(1)).iloc[0] == f"{train[TEXT_COLUMN][0]} {train[TEXT_PAIR_COLUMN][0]}"


def test_cola_has_no_second_text_column(experiment) -> None:  # noqa: F811
    run = assert_fails_without_data(experiment, "one text column", text_pair_column="question2")
    schema_less = mlflow.MlflowClient().list_artifacts(run.info.run_id)
    assert TEXT_PAIR_KEY not in {a.path for a in schema_less}


def test_a_single_sentence_run_records_no_pair(experiment, tmp_path) -> None:  # noqa: F811
    frame = pd.read_csv(EXAMPLE)[["question1", "is_duplicate"]]
    frame.to_csv(tmp_path / "single.csv", index=False)
    run = run_step(
        experiment, dataset=str(tmp_path / "single.csv"), text_column="question1", label_column="is_duplicate"
    )
    assert TEXT_PAIR_TAG not in run.data.tags
    assert read_text_pair_column(run.info.run_id) is None
    assert TEXT_PAIR_COLUMN not in read_split(run.info.run_id, "train").columns


def test_a_pair_overlaps_the_test_split_only_with_both_texts() -> None:
    pool = pd.DataFrame(
        {TEXT_COLUMN: ["How do I pay?", "How do I pay?"], TEXT_PAIR_COLUMN: ["How can I pay?", "Who pays?"]}
    ).assign(label=[1, 0])
    test = pd.DataFrame({TEXT_COLUMN: ["how do I  pay?"], TEXT_PAIR_COLUMN: ["How can I pay?"], "label": [1]})
    kept, dropped = drop_test_overlap(pool, test)
    assert dropped[TEXT_PAIR_COLUMN].tolist() == ["How can I pay?"]
    assert kept[TEXT_PAIR_COLUMN].tolist() == ["Who pays?"]
    report = ValidationReport()
    report.check_cross_split_overlap({"train": kept, "validation": kept.iloc[:0], "test": test})
    assert not report.problems
