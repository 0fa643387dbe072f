"""The label audit (issue 35, part 2): planted flipped labels in a training file come out near the top of
label_issues.csv, named by file, row and class name; the parameter turns it off; its count and cost are
logged."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from sentclf.contract import LABEL_AUDIT_ARTIFACT, LABEL_AUDIT_ROWS_METRIC
from sentclf.data import read_split
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, LabelSet
from tests.unit import test_preprocess as base

from label_audit import ISSUE_COLUMNS, audit, out_of_fold_probabilities

store = base.store
experiment = base.experiment


@pytest.fixture(autouse=True)
def backbone_offline(monkeypatch):
    """The audit resolves the bundled backbone, which sets HF_HUB_OFFLINE=1 in this process (as the step
    does in its own): set here, monkeypatch takes it away after each test, so no later test of the
    session (the hub's offline messages) sees it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


TOPICS = {
    "sport": ["football", "the match", "the goalkeeper", "a tennis final", "the league", "the striker"],
    "cooking": ["the soup", "a pan of onions", "the oven", "fresh basil", "the dough", "a spoon of butter"],
    "weather": ["the rain", "a cold front", "the forecast", "heavy snow", "the wind", "a thunderstorm"],
}
VERBS = ["was talked about", "changed everything", "surprised us", "came up again", "was on my mind"]
PLACES = ["yesterday", "this morning", "at the weekend", "in town", "all day", "last night"]


def topic_rows(rows: int, seed: int) -> pd.DataFrame:
    """Sentences whose topic (their label, by name) shows in their words: a frozen encoder separates them."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    labels = rng.choice(names, rows)
    texts = [
        f"{rng.choice(TOPICS[label]).capitalize()} {rng.choice(VERBS)} {rng.choice(PLACES)}, "
        f"said {rng.choice(['Ann', 'Bo', 'Cy', 'Di'])} ({i})."
        for i, label in enumerate(labels)
    ]
    return pd.DataFrame({"text": texts, "topic": labels})


def flip(frame: pd.DataFrame, count: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """`frame` with `count` rows' topic moved to the next topic; (frame, their positions)."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(frame), count, replace=False)
    names = list(TOPICS)
    topics = frame["topic"].to_numpy().copy()
    topics[flipped] = [names[(names.index(t) + 1) % len(names)] for t in topics[flipped]]
    return frame.assign(topic=topics), flipped


def test_planted_flips_are_found_near_the_top():
    frame, flipped = flip(topic_rows(300, seed=1), 15, seed=2)
    label_set = LabelSet.from_values(sorted(TOPICS))
    encoded = pd.DataFrame(
        {TEXT_COLUMN: frame["text"], LABEL_COLUMN: frame["topic"].map(label_set.index_of())}
    )
    result = audit(encoded, label_set, seed=0, max_rows=10_000)
    assert list(result.issues.columns) == list(ISSUE_COLUMNS)
    listed = result.issues["row"].to_numpy() - 1  # default rows: 1-based positions
    top = listed[: 2 * len(flipped)]
    recall = np.isin(flipped, top).mean()
    assert recall >= 0.8, f"only {recall:.0%} of the flipped rows among the first {len(top)} listed"
    first = result.issues.iloc[0]
    assert first["given_label"] in TOPICS and first["suggested_label"] in TOPICS
    assert first["given_label"] != first["suggested_label"]
    assert result.seconds > 0 and result.rows == 300 and not result.sampled


def test_more_rows_than_the_bound_are_sampled():
    label_set = LabelSet.from_values([0, 1])
    frame = pd.DataFrame({TEXT_COLUMN: [f"s {i}" for i in range(300)], LABEL_COLUMN: [0, 1] * 150})
    calls = []

    def fake_embed(texts):
        calls.append(len(texts))
        return np.random.default_rng(0).normal(size=(len(texts), 8))

    result = audit(frame, label_set, seed=0, max_rows=120, embedder=fake_embed)
    assert calls == [120] and result.rows == 120 and result.sampled


def test_folds_are_capped_by_the_rarest_class_and_every_class_gets_a_column():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 4))
    labels = np.array([0] * 40 + [1] * 18 + [2] * 2)  # class 2: 2 rows, so 2 folds
    probabilities = out_of_fold_probabilities(features, labels, classes=4, seed=0)
    assert probabilities.shape == (60, 4) and np.allclose(probabilities.sum(axis=1), 1)
    assert (probabilities[:, 3] == 0).all()  # a class of the label set without rows


def test_the_step_logs_label_issues_by_file_and_row(experiment, tmp_path):
    frame, flipped = flip(topic_rows(240, seed=3), 12, seed=4)
    path = tmp_path / "topics.csv"
    frame.to_csv(path, index=False)
    run = base.run_step(
        experiment, dataset=str(path), text_column="text", label_column="topic", label_audit="true"
    )
    issues = pd.read_csv(
        mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/{LABEL_AUDIT_ARTIFACT}")
    )
    assert list(issues.columns) == list(ISSUE_COLUMNS)
    assert issues["file"].str.endswith("topics.csv").all()
    # Rows are the file's 1-based data rows: each listed text is that row's text in the user's file.
    assert (frame["text"].to_numpy()[issues["row"].to_numpy() - 1] == issues["text"].to_numpy()).all()
    # The flipped rows in train/validation (the test split, held out of the same file, is not audited).
    pooled = set(read_split(run.info.run_id, "train")[TEXT_COLUMN])
    pooled |= set(read_split(run.info.run_id, "validation")[TEXT_COLUMN])
    audited = [row + 1 for row in flipped if frame["text"].iloc[row] in pooled]
    top = issues["row"].to_numpy()[: 2 * len(audited)]
    assert np.isin(audited, top).mean() >= 0.7, issues.head(2 * len(audited))
    metrics = run.data.metrics
    assert metrics["label_issues"] == len(issues) and metrics["label_audit_seconds"] > 0
    assert metrics[LABEL_AUDIT_ROWS_METRIC] == 216  # 240 rows less the 10% test split
    assert run.data.tags["label_audit"] == "done"


def test_the_parameter_turns_it_off(experiment, tmp_path):
    path = tmp_path / "topics.csv"
    topic_rows(120, seed=5).to_csv(path, index=False)
    run = base.run_step(experiment, dataset=str(path), text_column="text", label_column="topic")
    assert LABEL_AUDIT_ARTIFACT not in base.artifact_paths(run)
    assert "label_issues" not in run.data.metrics


@pytest.mark.parametrize("value", ["50", "x"])
def test_a_bad_bound_is_refused(value, capsys):
    import preprocess

    with pytest.raises(SystemExit):
        preprocess.parse_args(base.step_argv(label_audit_max_rows=value))
