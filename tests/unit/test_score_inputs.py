"""The score room's inputs and outputs without Spark: files as preprocess reads them (a file or a folder;
TSV, CSV, Parquet, JSON Lines; a headerless CoLA TSV), the text column found or named, the output written."""

import json
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from sentclf.tracking import StepInputError
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "score"))
import spark_io  # noqa: E402


@pytest.fixture(autouse=True)
def on_the_host(monkeypatch, tmp_path):
    monkeypatch.setattr(spark_io, "HOST_ROOT", tmp_path / "no-host-mount")


def test_every_supported_format_of_a_folder_is_read_in_name_order(tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.tsv").write_text("src\t1\t\tThe cat sat.\nsrc\t0\t*\tSat cat.\n")  # CoLA, headerless
    pd.DataFrame({"id": [1], "text": ["A csv row, quoted."]}).to_csv(folder / "b.csv", index=False)
    pd.DataFrame({"sentence": ["A parquet row."]}).to_parquet(folder / "c.parquet")
    (folder / "d.jsonl").write_text(json.dumps({"text": "A json row.", "n": 3}) + "\n")
    (folder / "notes.txt").write_text("not read")
    frame, rows = spark_io.read_inputs(str(folder))
    assert frame["text"].tolist() == [
        "The cat sat.",
        "Sat cat.",
        "A csv row, quoted.",
        "A parquet row.",
        "A json row.",
    ]
    assert rows == {"a.tsv": 2, "b.csv": 1, "c.parquet": 1, "d.jsonl": 1}


def test_the_text_column_is_named_or_an_error_says_how(tmp_path):
    path = tmp_path / "two.csv"
    pd.DataFrame({"id": [1], "body": ["words"]}).to_csv(path, index=False)
    with pytest.raises(StepInputError, match="set -P text_column"):
        spark_io.read_inputs(str(path))
    frame, _ = spark_io.read_inputs(str(path), text_column="body")
    assert frame["text"].tolist() == ["words"]
    with pytest.raises(StepInputError, match="no file or folder"):
        spark_io.read_inputs(str(tmp_path / "missing"))


def test_the_output_is_written_into_a_new_folder(tmp_path):
    table = tmp_path / "scores.parquet"
    pd.DataFrame({"text": ["a"], "class": [1]}).to_parquet(table)
    spark_io.deliver({"scores.parquet": table}, tmp_path / "out" / "nested")
    assert pq.read_table(tmp_path / "out" / "nested" / "scores.parquet").num_rows == 1
