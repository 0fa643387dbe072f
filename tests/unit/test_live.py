"""Labels that come back, joined with synthetic capture files as the server writes them (two versions in
shadow: the champion's answers served, the challenger's captured): each version's live figures equal what
is computed directly from the answers and labels, and every kind of bad feedback is refused with its file
and row, counted, and never used."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sentclf.bootstrap import paired_bootstrap, resample_indices
from sentclf.feedback import FeedbackError, read_feedback
from sentclf.live import LiveRule, decide_live, live_evidence
from sentclf.metrics import classification_metrics, matthews_corrcoef
from sentclf.traffic import read_capture

LABELS = ["unacceptable", "acceptable"]
NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


def stamp(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(rid: str, index: int, version: str, label: int, served: bool, route: str, model="cola", age=60.0):
    p = 0.9 if label else 0.1
    return {
        "time": stamp(age),
        "model": model,
        "version": version,
        "label": label,
        "label_name": LABELS[label],
        "probabilities": [1 - p, p],
        "chars": 20,
        "id": rid,
        "index": index,
        "served": served,
        "route": route,
    }


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def shadow_traffic(rng, n: int, champion_error: float, challenger_error: float):
    """n one-sentence requests: true labels, the champion's (served) and the challenger's (shadow) answers."""
    truth = rng.integers(0, 2, n)
    champion = np.where(rng.random(n) < champion_error, 1 - truth, truth)
    challenger = np.where(rng.random(n) < challenger_error, 1 - truth, truth)
    rows = []
    for i in range(n):
        rows.append(record(f"r{i}", 0, "1", int(champion[i]), True, "champion"))
        rows.append(record(f"r{i}", 0, "2", int(challenger[i]), False, "shadow"))
    return truth, champion, challenger, rows


@pytest.fixture
def folders(tmp_path):
    capture, feedback = tmp_path / "capture", tmp_path / "feedback"
    capture.mkdir()
    feedback.mkdir()
    return capture, feedback


def test_each_versions_live_mcc_is_what_its_answers_and_labels_give(folders):
    capture, feedback = folders
    rng = np.random.default_rng(3)
    truth, champion, challenger, rows = shadow_traffic(rng, 300, 0.3, 0.15)
    # A request of three sentences answered by the champion alone (direct), with its labels by position.
    rows += [record("multi", i, "1", i % 2, True, "direct") for i in range(3)]
    write_lines(capture / "capture-20261204T110000Z-host-1-1.jsonl", rows)
    labelled = np.arange(0, 300, 2)  # half the requests come back labelled
    (feedback / "team.csv").write_text(
        "id,label\n" + "".join(f"r{i},{LABELS[truth[i]]}\n" for i in labelled[:100])
    )
    write_lines(
        feedback / "feedback-20261204T120000Z.jsonl",
        [{"id": f"r{i}", "index": 0, "label": int(truth[i]), "model": "cola"} for i in labelled[100:]]
        + [{"id": "multi", "index": i, "label": LABELS[1 - i % 2]} for i in range(3)],
    )
    labels = read_feedback(feedback, LABELS, ["cola"])
    assert not labels.refused and len(labels.labels) == 153
    window = read_capture(capture, None, NOW)
    evidence = live_evidence(window, labels, "cola-classifier", {"cola"}, 2, champion="1", challenger="2")

    v1, v2 = evidence.versions["1"], evidence.versions["2"]
    y1 = np.concatenate([truth[labelled], [1, 0, 1]])
    p1 = np.concatenate([champion[labelled], [0, 1, 0]])
    assert v1.labelled == 153 and v2.labelled == 150
    assert v1.mcc.value == pytest.approx(matthews_corrcoef(y1, p1))
    assert v2.mcc.value == pytest.approx(matthews_corrcoef(truth[labelled], challenger[labelled]))
    direct = classification_metrics(y1, p1)
    assert v1.accuracy.value == pytest.approx(direct["accuracy"])
    assert v1.f1_macro.value == pytest.approx(direct["f1_macro"])
    assert v1.mcc.low < v1.mcc.value < v1.mcc.high
    assert (v1.requests, v1.served, v1.shadow, v1.sentences) == (301, 303, 0, 303)
    assert (v2.requests, v2.served, v2.shadow) == (300, 0, 300)
    assert evidence.joined == {"used": 153}

    (pair,) = evidence.pairs
    assert (pair.champion, pair.challenger, pair.both, pair.labelled) == ("1", "2", 300, 150)
    assert pair.agreement == pytest.approx(float((champion == challenger).mean()))
    expected = paired_bootstrap(
        truth[labelled], challenger[labelled], champion[labelled], resample_indices(150, 1000, 0)
    )
    assert pair.comparison.delta_mcc == expected.delta_mcc
    assert pair.comparison.share_better == expected.share_better
    metrics = v1.metrics()
    assert metrics["live_mcc"] == v1.mcc.value and metrics["live_labels"] == 153


def test_the_pair_follows_the_routes_when_the_registry_names_no_version_that_answered(folders):
    capture, feedback = folders
    truth, _, _, rows = shadow_traffic(np.random.default_rng(0), 40, 0.2, 0.2)
    write_lines(capture / "capture-1.jsonl", rows)
    write_lines(feedback / "labels.jsonl", [{"id": f"r{i}", "label": int(truth[i])} for i in range(40)])
    evidence = live_evidence(
        read_capture(capture, None, NOW), read_feedback(feedback, LABELS), "m", {"cola"}, 2, champion="7"
    )
    assert [(p.champion, p.challenger, p.labelled) for p in evidence.pairs] == [("1", "2", 40)]


def test_older_records_without_ids_have_no_labels_and_nothing_breaks(folders):
    capture, feedback = folders
    old = [
        {
            k: v
            for k, v in record(f"x{i}", 0, "1", 1, True, "champion").items()
            if k in ("time", "model", "version", "label", "probabilities", "chars")
        }
        for i in range(5)
    ]
    write_lines(capture / "capture-0.jsonl", old + [record("r0", 0, "1", 1, True, "champion")])
    write_lines(feedback / "f.jsonl", [{"id": "r0", "label": "acceptable"}])
    evidence = live_evidence(
        read_capture(capture, None, NOW), read_feedback(feedback, LABELS), "m", {"cola"}, 2
    )
    figures = evidence.versions["1"]
    assert (figures.sentences, figures.requests, figures.labelled, evidence.without_id) == (6, 6, 1, 5)
    assert "5 captured records carry no request id" in " ".join(evidence.notes())


def test_bad_feedback_is_refused_by_file_and_row_and_counted(folders):
    capture, feedback = folders
    rows = [record(f"r{i}", 0, "1", i % 2, True, "champion") for i in range(4)]
    rows.append(record("spam-1", 0, "3", 1, True, "champion", model="spam"))
    write_lines(capture / "capture-1.jsonl", rows)
    (feedback / "a-wrong-columns.csv").write_text("request,answer\nr0,acceptable\n")
    (feedback / "b.csv").write_text(
        "id,label,index\n"
        "r0,acceptable,0\n"  # used
        "r1,maybe,0\n"  # row 3: outside the label set
        "r1,7,0\n"  # row 4: an index outside the label set
        "r2,acceptable,-1\n"  # row 5: not a position
        ",acceptable,0\n"  # row 6: no id
        "r0,acceptable,0\n"  # row 7: duplicate
        "r0,unacceptable,0\n"  # row 8: conflict
        "nobody,acceptable,0\n"  # row 9: an id no capture has
        "spam-1,acceptable,0\n"  # row 10: another model's request
    )
    write_lines(feedback / "c.jsonl", [{"id": "r3", "label": 0, "model": "spam"}, {"id": "r2", "label": 1}])
    (feedback / "c.jsonl").write_text((feedback / "c.jsonl").read_text() + "{not json\n")
    (feedback / "capture-ignored.jsonl").write_text("{}\n")  # a capture file is never read as labels
    labels = read_feedback(feedback, LABELS, ["cola"])
    evidence = live_evidence(read_capture(capture, None, NOW), labels, "cola-classifier", {"cola"}, 2)
    assert dict(labels.refused) == {
        "bad_file": 1,
        "unknown_label": 2,
        "bad_row": 3,
        "duplicate": 1,
        "conflict": 1,
        "other_model": 2,
        "unknown_id": 1,
    }
    text = "\n".join(labels.problems)
    b, c = feedback / "b.csv", feedback / "c.jsonl"
    for expected in (
        f"{feedback / 'a-wrong-columns.csv'}: columns ['request', 'answer'] lack ['id', 'label']",
        f"{b}:3: label 'maybe' is not in the model's label set ['unacceptable', 'acceptable']",
        f"{b}:4: label '7' is not in the model's label set",
        f"{b}:5: index '-1' is not a sentence position",
        f"{b}:6: no `id`",
        f"{b}:7: request 'r0' sentence 0 again",
        f"{b}:8: request 'r0' sentence 0 labelled 0, but {b}:2 said 1; the first counts",
        f"{b}:9: no captured request has id 'nobody'",
        f"{b}:10: request 'spam-1' was answered by another model",
        f"{c}:1: a label for model 'spam', not cola",
        f"{c}:3: not a JSON object",
    ):
        assert expected in text, (expected, text)
    # Only r0 and r2 are evidence; nothing refused reaches the figures.
    assert evidence.joined == {"used": 2, "unknown_id": 1, "other_model": 1}
    assert evidence.versions["1"].labelled == 2 and "3" not in evidence.versions


def test_an_empty_or_missing_folder_says_so(tmp_path):
    with pytest.raises(FeedbackError, match="no such folder"):
        read_feedback(tmp_path / "nowhere", LABELS)
    empty = read_feedback(tmp_path, LABELS)
    assert "holds no feedback files" in empty.empty_message
    evidence = live_evidence(read_capture(tmp_path, None, NOW), empty, "m", {"cola"}, 2)
    decision = decide_live(evidence, LiveRule(min_labels=200), "1", "2")
    assert not decision.promote and decision.summary == "kept: 0 labelled requests, need 200"
    assert any("holds no feedback files" in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("champion_error", "challenger_error", "n", "promote", "summary"),
    [
        (0.35, 0.05, 400, True, "promoted (v2 against champion v1 on 400 labelled live requests"),
        (
            0.05,
            0.35,
            400,
            False,
            "kept (v2 against champion v1 on 400 labelled live requests; confidence failed",
        ),
        (0.35, 0.05, 150, False, "kept: 150 labelled requests, need 200"),
    ],
)
def test_the_live_rule(folders, champion_error, challenger_error, n, promote, summary):
    capture, feedback = folders
    truth, _, _, rows = shadow_traffic(np.random.default_rng(1), n, champion_error, challenger_error)
    write_lines(capture / "capture-1.jsonl", rows)
    write_lines(feedback / "l.jsonl", [{"id": f"r{i}", "label": int(truth[i])} for i in range(n)])
    evidence = live_evidence(
        read_capture(capture, None, NOW), read_feedback(feedback, LABELS), "m", {"cola"}, 2, "1", "2"
    )
    decision = decide_live(evidence, LiveRule(confidence=0.9, min_labels=200), "1", "2")
    assert decision.promote is promote and decision.summary.startswith(summary), decision
    assert decision.reasons[0].startswith(f"evidence: {n} labelled requests")


def test_a_window_of_another_models_records_only_gives_no_figures_and_refuses_its_labels(folders):
    capture, feedback = folders
    write_lines(capture / "capture-1.jsonl", [record("s1", 0, "3", 1, True, "champion", model="spam")])
    write_lines(feedback / "f.jsonl", [{"id": "s1", "label": 1}, {"id": 7, "label": 0}])
    evidence = live_evidence(
        read_capture(capture, None, NOW), read_feedback(feedback, LABELS), "m", {"cola"}, 2
    )
    assert evidence.versions == {} and evidence.joined == {"other_model": 1, "unknown_id": 1}
