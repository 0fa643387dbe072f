"""The score room's inputs for a sentence-pair model, without Spark: `-P text_pair_column` reads the
second text beside the first into `text_pair` (the pyfunc's second column); a headerless CoLA TSV, one
text per row, cannot hold pairs."""

import sys

import pandas as pd
import pytest

from sentclf.tracking import StepInputError
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "score"))
import score  # noqa: E402
import spark_io  # noqa: E402


@pytest.fixture(autouse=True)
def on_the_host(monkeypatch, tmp_path):
    monkeypatch.setattr(spark_io, "HOST_ROOT", tmp_path / "no-host-mount")


def test_the_second_text_is_read_beside_the_first(tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    pd.DataFrame({"q1": ["a?", "b?"], "q2": ["c?", ""]}).to_csv(folder / "a.csv", index=False)
    pd.DataFrame({"q1": ["d?"], "q2": ["e?"]}).to_parquet(folder / "b.parquet")
    frame, rows = spark_io.read_inputs(str(folder), "q1", "q2")
    assert frame.to_dict("list") == {"text": ["a?", "b?", "d?"], "text_pair": ["c?", "", "e?"]}
    assert rows == {"a.csv": 2, "b.parquet": 1}
    single, _ = spark_io.read_inputs(str(folder), "q1")
    assert list(single.columns) == ["text"]
    with pytest.raises(StepInputError, match="no column 'q3'"):
        spark_io.read_inputs(str(folder), "q1", "q3")
    (tmp_path / "cola.tsv").write_text("src\t1\t\tThe cat sat.\n")
    with pytest.raises(StepInputError, match="no second text"):
        spark_io.read_inputs(str(tmp_path / "cola.tsv"), "auto", "q2")


@pytest.mark.parametrize(("given", "expected"), [("none", None), ("", None), ("q2", "q2")])
def test_the_parameter_none_means_single_texts(given, expected):
    args = score.parse_args(["--input", "x", "--output", "y", "--text-pair-column", given])
    assert args.text_pair == expected
