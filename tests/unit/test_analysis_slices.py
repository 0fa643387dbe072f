"""Sliced metrics (issue 35, part 1): the slice columns travel from the user's files through preprocess
into the split parquet files (CoLA's source column by default), and evaluate scores the served model per
slice, flags a slice significantly worse than the rest, says "too few rows" for a small one, and shows
them in report.html (table and figure) and the model card."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from sentclf.contract import LABEL_AUDIT_ROWS_METRIC
from sentclf.data import read_slice_columns, read_split
from sentclf.schema import COLA_LABELS, LABEL_COLUMN, TEXT_COLUMN, LabelSet
from tests.unit import test_evaluate as ev
from tests.unit import test_preprocess as base

import evaluate
import preprocess
from inputs import EvaluationInputs
from results import EvaluationData
from slices import LENGTH_DIMENSION, OTHER_VALUES, TOO_FEW, length_buckets, pooled_values, slice_scores
from sources import load_cola

store = base.store
experiment = base.experiment
registry = ev.registry

# ---- pure functions --------------------------------------------------------------------------------------


def test_length_buckets_are_quartile_ranges_that_cover_every_row():
    counts = list(range(1, 41))  # 40 rows, 1..40 tokens
    buckets = length_buckets(counts)
    assert buckets[0] == "1-10" and buckets[9] == "1-10" and buckets[10] == "11-20" and buckets[-1] == "31-40"
    assert len(set(buckets)) == 4
    assert length_buckets([7, 7, 7]) == ["7", "7", "7"]  # one length: one bucket named by it
    assert length_buckets([]) == []


def test_rare_values_are_pooled_so_an_id_column_does_not_make_a_slice_per_row():
    values = ["a"] * 5 + ["b"] * 3 + [f"id{i}" for i in range(10)]
    pooled = pooled_values(values, keep=2)
    assert set(pooled) == {"a", "b", OTHER_VALUES}
    assert pooled_values(["x", "y"], keep=2) == ["x", "y"]


def planted(rows: int = 600, seed: int = 0, classes: int = 2):
    """Labels, predictions right 90% of the time, and a `channel` whose value `phone` (150 rows) is right
    only 50% of the time, `fax` (10 rows) always wrong, `web` the rest."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    channel = np.array(["phone"] * 150 + ["fax"] * 10 + ["web"] * (rows - 160))
    right = np.where(channel == "phone", rng.random(rows) < 0.5, rng.random(rows) < 0.9)
    right[channel == "fax"] = False
    predictions = np.where(right, labels, (labels + 1) % classes)
    return labels, predictions, channel


@pytest.mark.parametrize("classes", [2, 7, 200])
def test_a_worse_slice_is_flagged_and_a_small_one_says_too_few_rows(classes):
    labels, predictions, channel = planted(classes=classes)
    scores = {
        s.value: s for s in slice_scores(labels, predictions, {"channel": channel}, classes, 1000, seed=1)
    }
    assert [scores[v].rows for v in ("web", "phone", "fax")] == [440, 150, 10]
    phone, web, fax = scores["phone"], scores["web"], scores["fax"]
    assert phone.flagged and phone.delta_accuracy.high < 0 and phone.note == ""
    assert phone.accuracy.low < phone.accuracy.value < phone.accuracy.high
    assert not web.flagged and web.delta_accuracy.low > 0
    # Always wrong, but 10 rows: reported, never flagged.
    assert fax.accuracy.value == 0.0 and not fax.flagged
    assert fax.note == TOO_FEW and fax.delta_accuracy is None


def test_slices_are_seeded_and_ordered_largest_first_lengths_by_range():
    labels, predictions, channel = planted()
    lengths = np.array(["9-12", "1-4", "5-8"] * 200)
    groups = {"channel": channel, LENGTH_DIMENSION: lengths}
    first = slice_scores(labels, predictions, groups, 2, 1000, seed=3)
    assert first == slice_scores(labels, predictions, groups, 2, 1000, seed=3)
    assert [s.value for s in first] == ["web", "phone", "fax", "1-4", "5-8", "9-12"]
    with pytest.raises(ValueError, match="3 values for 600 rows"):
        slice_scores(labels, predictions, {"x": ["a", "b", "c"]}, 2, 1000, seed=3)


# ---- preprocess keeps the columns ------------------------------------------------------------------------


def test_cola_keeps_its_source_column():
    frames = load_cola().frames
    assert frames["train"]["source_code"].iloc[0] == "gj04"
    assert frames["test"]["source_code"].nunique() == 17


def test_slice_columns_travel_from_a_csv_into_the_split_files(experiment, tmp_path):
    frame = base.synthetic_frame(400, seed=3)
    rng = np.random.default_rng(3)
    frame["source"] = rng.choice(["forum", "mail"], len(frame))
    frame["channel"] = rng.choice(["web", "phone", ""], len(frame))  # an empty cell is a slice too
    frame["ignored"] = "x"
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    run = base.run_step(experiment, dataset=str(path), slice_columns="source, channel")
    run_id = run.info.run_id
    assert read_slice_columns(run_id) == ("source", "channel")
    test = read_split(run_id, "test", ("source", "channel"))
    assert list(test.columns) == [TEXT_COLUMN, LABEL_COLUMN, "source", "channel"]
    assert set(test["channel"]) == {"web", "phone", "(missing)"}
    assert list(read_split(run_id, "train").columns) == [TEXT_COLUMN, LABEL_COLUMN]  # others: unchanged


def test_a_missing_slice_column_names_the_parameter(experiment, tmp_path):
    path = tmp_path / "mine.csv"
    base.synthetic_frame(200, seed=4).to_csv(path, index=False)
    base.assert_fails_without_data(experiment, "slice_columns", dataset=str(path), slice_columns="channel")


def test_no_slice_columns_is_the_word_none_not_an_empty_string():
    """An empty default would reach a Kubernetes Job with its quotes (conductor.kube.manifests refuses it)."""
    assert preprocess.parse_args(base.step_argv()).slices == ()
    named = preprocess.parse_args(base.step_argv(slice_columns="source, channel"))
    assert named.slices == ("source", "channel")


@pytest.mark.parametrize("bad", ["sentence", "label", "row,channel"])
def test_a_slice_column_may_not_be_the_text_or_label_column(bad, capsys):
    with pytest.raises(SystemExit):
        preprocess.parse_args(base.step_argv(slice_columns=bad))
    assert "slice column must be another column" in capsys.readouterr().err


# ---- evaluate shows them ---------------------------------------------------------------------------------


def test_the_report_and_the_model_card_show_the_slices(registry, tmp_path):
    texts, labels = ev.sample_rows()
    version = registry(ev.MEDIOCRE)
    served = ev.served_by(version, texts, tmp_path)
    wrong = served.scores.labels != labels
    # A "hard" channel: 60 rows the model got wrong and 60 it got right; the rest "easy".
    hard = np.zeros(len(labels), dtype=bool)
    hard[np.flatnonzero(wrong)[:60]] = True
    hard[np.flatnonzero(~wrong)[:60]] = True
    channel = np.where(hard, "hard <b>", "easy")  # slice values are the user's: escaped in the report
    groups = {LENGTH_DIMENSION: ["6"] * len(labels), "channel": channel}
    inputs = EvaluationInputs("gated", version, f"gated-server:{version}", "data-run")
    with mlflow.start_run() as run:
        evaluation = evaluate.conclude(
            ev.CONFIG, inputs, EvaluationData(texts, labels, COLA_LABELS, groups), served, ev.ARGS
        )
    flagged = [(s.dimension, s.value) for s in evaluation.flagged_slices]
    assert flagged == [("channel", "hard <b>")]
    run = mlflow.get_run(run.info.run_id)
    assert run.data.metrics["slices_flagged"] == 1 and run.data.metrics["slices"] == 3
    report = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/evaluation/report.html")
    assert "<h2>Slices" in report and "hard &lt;b&gt;" in report and ">worse<" in report
    assert 'alt="accuracy by slice"' in report
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/slices.png" in artifacts
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card.md")
    assert "Significantly worse than the rest" in card and "channel = `hard <b>` (120 rows)" in card
    summary = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/evaluation/report.json")
    assert {s["value"] for s in summary["slices"]} == {"hard <b>", "easy", "6"}


def test_slice_groups_are_lengths_and_the_kept_columns():
    test = pd.DataFrame(
        {TEXT_COLUMN: ["a b c", "a", "a b c d e f g h"], LABEL_COLUMN: [0, 1, 0], "source": ["x", "y", "x"]}
    )
    groups = evaluate.slice_groups(test, ("source", "absent"))
    assert list(groups) == [LENGTH_DIMENSION, "source"]
    assert groups["source"] == ["x", "y", "x"] and len(groups[LENGTH_DIMENSION]) == 3


def test_many_classes_by_name_in_slices():
    names = tuple(f"topic {i}" for i in range(12))
    label_set = LabelSet.from_values(list(range(12)), names)
    labels, predictions, channel = planted(classes=label_set.size)
    scores = slice_scores(labels, predictions, {"channel": channel}, label_set.size, 1000, seed=0)
    assert all(-1 <= s.mcc.value <= 1 for s in scores)


def test_the_report_shows_the_top_of_the_datas_label_audit(registry, tmp_path):
    texts, labels = ev.sample_rows()
    version = registry(ev.MEDIOCRE)
    issues = pd.DataFrame(
        {
            "file": ["mine.csv"] * 12,
            "row": range(1, 13),
            "text": [f"suspect <i>{i}</i>" for i in range(12)],
            "given_label": ["acceptable"] * 12,
            "suggested_label": ["unacceptable"] * 12,
            "score": np.linspace(0.01, 0.2, 12),
        }
    )
    with mlflow.start_run() as data_run:
        path = tmp_path / "label_issues.csv"
        issues.to_csv(path, index=False)
        mlflow.log_artifact(str(path))
        mlflow.log_metric(LABEL_AUDIT_ROWS_METRIC, 400)
    inputs = EvaluationInputs("gated", version, f"gated-server:{version}", data_run.info.run_id)
    data = EvaluationData(texts, labels, COLA_LABELS)
    with mlflow.start_run() as run:
        evaluation = evaluate.conclude(
            ev.CONFIG, inputs, data, ev.served_by(version, texts, tmp_path), ev.ARGS
        )
    assert evaluation.label_issues.total == 12 and evaluation.label_issues.audited == 400
    report = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/evaluation/report.html")
    assert "Label audit of the training data" in report and "12 of 400 training rows" in report
    assert (
        "suspect &lt;i&gt;9&lt;/i&gt;" in report and "suspect &lt;i&gt;10&lt;/i&gt;" not in report
    )  # top 10
    assert "<h2>Slices" not in report  # no groups given: no slice section
