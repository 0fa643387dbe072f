"""Several labels per text in the preprocess room (`-P label_mode=multi`): lists in one column or one 0/1
column per label, parsed and validated (errors name file, row and column), the label set the union of the
labels, splits stratified on each row's rarest label, schema.json `label_mode: multi`; on the templated
example tickets `make example-data` writes (examples/multilabel/generate.py, written here into tmp_path)."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from examples.multilabel import generate
from sentclf.contract import LABEL_AUDIT_ARTIFACT, LABEL_AUDIT_ROWS_METRIC
from sentclf.data import read_label_set, read_schema, read_split
from sentclf.schema import LABEL_COLUMN, SPLITS
from tests.unit import test_preprocess as base
from tests.unit.test_preprocess_labels import failed_message

import label_audit
import label_lists as multilabel
from validation import ValidationReport

store = base.store
experiment = base.experiment
MULTI = {"label_mode": "multi", "text_column": "text"}


@pytest.fixture
def tickets(tmp_path) -> tuple[Path, Path]:
    """The example tickets as `make example-data` writes them: tickets.csv, tickets_columns.csv."""
    return generate.write_tickets(tmp_path / "tickets")


def parsed(cells: list, label_column: str = "labels", allowed=None, **columns) -> tuple[pd.DataFrame, list]:
    frame = pd.DataFrame({"sentence": ["a text"] * len(cells), LABEL_COLUMN: cells, **columns})
    frame = frame.assign(row=range(1, len(frame) + 1))
    report = ValidationReport()
    out = multilabel.parse_part(frame, "train.csv", report, label_column, "|", allowed)
    return out, [problem.describe() for problem in report.errors]


def test_a_list_column_is_parsed_and_each_bad_row_named():
    out, errors = parsed(["billing|login", " refund ", "billing,login", "", "login||login"])
    assert out[multilabel.NAMES_COLUMN].tolist() == [["billing", "login"], ["refund"], [], [], ["login"]]
    assert any("train.csv, column label, row(s) 3: label list mixes delimiters" in e for e in errors)
    assert any("row(s) 4: no label" in e for e in errors)


def test_an_unknown_label_is_an_error_when_the_labels_are_given():
    allowed = multilabel.LabelSet(("billing", "login"), ("billing", "login"))
    _, errors = parsed(["billing", "login|refnud"], allowed=allowed)
    assert errors == [
        "train.csv, column label, row(s) 2: label not in the label set ['billing', 'login']; found "
        "['refnud']. Fix these rows, or add the name(s) to -P labels"
    ]


def test_indicator_columns_become_lists_and_a_non_01_value_is_named():
    out, errors = parsed(["1", "0", "0", "yes"], label_column="billing,login", login=["1", "1", "0", "0"])
    assert out[multilabel.NAMES_COLUMN].tolist() == [["billing", "login"], ["login"], [], []]
    assert "login" not in out.columns
    assert any("column billing, row(s) 4: not 0 or 1" in e for e in errors)
    assert any("column billing, login, row(s) 3: no label" in e for e in errors)


def test_rarest_label_strata_keep_every_label_in_both_parts():
    labels = pd.Series([[0], [0, 1], [0], [0, 2], [0], [1], [0, 2], [0], [2], [0, 1]] * 4)
    frame = pd.DataFrame({"sentence": [f"t{i}" for i in range(len(labels))], LABEL_COLUMN: labels})
    rest, held = multilabel.multilabel_split(frame, 0.25, seed=1)
    assert len(rest) + len(held) == len(frame)
    for part in (rest, held):
        assert set(np.flatnonzero(multilabel.label_counts(part[LABEL_COLUMN], 3))) == {0, 1, 2}
    assert isinstance(held[LABEL_COLUMN].iloc[0], list)


def test_step_on_the_example_tickets(experiment, monkeypatch, tickets):
    # The audit's embedder stood in for (the real one is tested single-label): it runs, not how well.
    monkeypatch.setattr(
        label_audit, "embed", lambda texts: np.random.default_rng(0).normal(size=(len(texts), 8))
    )
    listed, columns_file = tickets
    run = base.run_step(experiment, dataset=str(listed), label_column="labels", label_audit="true", **MULTI)
    run_id = run.info.run_id
    assert read_label_set(run_id).names == ("billing", "login", "refund", "shipping")
    schema = read_schema(run_id)
    assert schema["label_mode"] == "multi" and schema["columns"][LABEL_COLUMN] == "list<int64>"
    splits = {name: read_split(run_id, name) for name in SPLITS}
    assert sum(len(frame) for frame in splits.values()) == 400
    for frame in splits.values():
        assert set(np.flatnonzero(multilabel.label_counts(frame[LABEL_COLUMN], 4))) == {0, 1, 2, 3}
    assert max(len(row) for row in splits["train"][LABEL_COLUMN]) == 3
    profile = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/profile.json"))
    assert sum(profile["train"]["label_count"].values()) > len(splits["train"])
    assert run.data.tags["label_audit"] == "done"  # per label (multilabel_audit.py)
    issues = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{LABEL_AUDIT_ARTIFACT}"))
    assert run.data.metrics[LABEL_AUDIT_ROWS_METRIC] == len(splits["train"]) + len(splits["validation"])
    assert issues.empty or set(json.loads(issues["given_label"].iloc[0])) <= {
        "billing",
        "login",
        "refund",
        "shipping",
    }
    # the same rows as one 0/1 column per label: the same texts with the same label names
    columns = base.run_step(
        experiment, dataset=str(columns_file), label_column="billing,login,shipping,refund", **MULTI
    )
    names = ("billing", "login", "shipping", "refund")
    assert read_label_set(columns.info.run_id).names == names

    def named(run_id: str, label_names: tuple[str, ...]) -> set:
        frames = [read_split(run_id, name) for name in SPLITS]
        return {
            (text, tuple(sorted(label_names[i] for i in row)))
            for frame in frames
            for text, row in zip(frame["sentence"], frame[LABEL_COLUMN], strict=True)
        }

    assert named(columns.info.run_id, names) == named(run_id, read_label_set(run_id).names)


def test_a_bad_row_fails_the_step_before_any_data(experiment, tmp_path, tickets):
    frame = pd.read_csv(tickets[0])
    frame.loc[7, "labels"] = "billing;refund"
    frame.loc[12, "labels"] = ""
    path = tmp_path / "tickets.csv"
    frame.to_csv(path, index=False)
    message = failed_message(
        experiment, "mixes delimiters", dataset=str(path), label_column="labels", **MULTI
    )
    assert "tickets.csv, column labels, row(s) 8: label list mixes delimiters" in message
    assert "row(s) 13: no label" in message


@pytest.mark.parametrize("delimiter", ["", " "])
def test_a_blank_delimiter_is_refused(delimiter):
    with pytest.raises(SystemExit):
        base.preprocess.parse_args(base.step_argv(label_mode="multi", label_delimiter=delimiter))


@pytest.mark.parametrize(("given", "meant"), [("pipe", "|"), ("semicolon", ";"), ("|", "|"), ("::", "::")])
def test_a_delimiter_is_named_or_given_as_itself(given, meant):
    args = base.preprocess.parse_args(base.step_argv(label_mode="multi", label_delimiter=given))
    assert args.label_delimiter == meant
