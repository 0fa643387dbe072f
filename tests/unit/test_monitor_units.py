"""The monitor's pieces without a store: the capture window, the feature scores and verdict, and
RETRAIN_WHEN's decisions that need no monitor run."""

import json
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ops import retrain_when
from sentclf.contract import MonitorVerdict
from sentclf.traffic import parse_since, read_capture, served_records
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "monitor"))
from compare import compare, verdict  # noqa: E402


def test_since_windows():
    assert parse_since("24h") == timedelta(hours=24)
    assert parse_since("7d") == timedelta(days=7) and parse_since("all") is None
    with pytest.raises(ValueError, match="24h"):
        parse_since("yesterday")


def test_the_window_keeps_recent_records_and_skips_broken_lines(tmp_path):
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    lines = [
        {"time": (now - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "chars": h} for h in (30, 2, 1)
    ]
    (tmp_path / "capture-1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"time": "cut')
    window = read_capture(tmp_path, timedelta(hours=24), now)
    assert window["chars"].tolist() == [2, 1]
    assert len(read_capture(tmp_path, None, now)) == 3


def test_drift_counts_each_sentence_once_leaving_shadow_answers_out(tmp_path):
    """A shadow pair captures two answers per sentence; the served one is what the caller sent and got.
    Records from before two-version serving (no `served`) were all served."""
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lines = [
        {"time": stamp, "id": "a", "version": "1", "served": True, "route": "champion"},
        {"time": stamp, "id": "a", "version": "2", "served": False, "route": "shadow"},
        {"time": stamp, "id": "b", "version": "2", "served": True, "route": "challenger"},
        {"time": stamp, "version": "1"},  # an older record
    ]
    (tmp_path / "capture-1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    window = read_capture(tmp_path, None, now)
    traffic = served_records(window)
    assert len(window) == 4 and len(traffic) == 3
    assert traffic["version"].tolist() == ["1", "2", "1"] and "shadow" not in set(traffic["route"].dropna())
    old = read_capture(tmp_path, None, now).drop(columns=["served", "route", "id"])
    assert len(served_records(old)) == 4


def test_a_shifted_stream_drifts_by_name_and_a_sample_of_the_same_does_not():
    rng = np.random.default_rng(0)
    reference = {
        "chars": rng.normal(40, 15, 5000).clip(5),
        "tokens": rng.normal(10, 4, 5000).clip(1),
        "oov_share": rng.beta(1, 20, 5000),
        "confidence": rng.uniform(0.5, 1.0, 500),
    }
    same = {name: rng.choice(values, 200) for name, values in reference.items()}
    predictions = rng.integers(0, 2, 500)
    scores = compare(reference, same, ["no", "yes"], predictions, rng.choice(predictions, 200))
    assert verdict(scores, 0.2) == MonitorVerdict(drift=False, features=(), threshold=0.2)
    shifted = same | {"chars": same["chars"] * 6, "tokens": same["tokens"] * 5}
    result = verdict(compare(reference, shifted, ["no", "yes"], predictions, np.ones(200, dtype=int)), 0.2)
    assert result.drift and result.features == ("chars", "tokens", "predicted_class")


def test_retrain_when_reads_the_pipeline_arguments_and_needs_a_folder_for_drift():
    args = ["-P", "dataset=/srv/labels", "-Pregistered_model_name=spam"]
    assert retrain_when.pipeline_parameter(args, "dataset", "cola") == "/srv/labels"
    assert retrain_when.pipeline_parameter(args, "registered_model_name", "x") == "spam"
    assert retrain_when.pipeline_parameter([], "dataset", "cola") == "cola"
    assert retrain_when.decide("new-data", "", "", [])[0] == retrain_when.RETRAIN
    assert retrain_when.decide("always", "", "", [])[0] == retrain_when.RETRAIN
    status, line = retrain_when.decide("drift", "", "", [])
    assert status == retrain_when.FAILED and "RETRAIN_TRAFFIC" in line


def test_retrain_when_reads_the_monitors_verdict_as_data(monkeypatch):
    """The monitor's verdict reaches ops as its JSON line (sentclf.contract.MonitorVerdict), whatever
    else the monitor prints; no verdict line is a failed monitor, not a quiet night."""
    import subprocess

    verdict = MonitorVerdict(drift=False, features=(), threshold=0.2)
    printed = {"stdout": f"INFO monitor: 160 records\n{verdict.line()}\n"}

    def fake_run(command, **kwargs):
        assert command[:2] == ["mlflow", "run"] and "model=models:/spam@champion" in command
        return subprocess.CompletedProcess(command, 0, printed["stdout"], "")

    monkeypatch.setattr(retrain_when.subprocess, "run", fake_run)
    args = ["-P", "registered_model_name=spam"]
    status, line = retrain_when.decide("drift", "/srv/traffic", "", args)
    assert status == retrain_when.NO_DRIFT and "models:/spam@champion" in line
    printed["stdout"] = "monitor verdict: drift=false features=none\n"  # the old text line is no verdict
    status, line = retrain_when.decide("drift", "/srv/traffic", "", args)
    assert status == retrain_when.FAILED and "monitor failed" in line


def test_the_reports_live_section_shows_each_version_the_pair_and_the_refused_labels(tmp_path):
    from sentclf.feedback import read_feedback
    from sentclf.live import live_evidence
    from tests.unit.test_live import LABELS, NOW, shadow_traffic, write_lines

    from monitor_report import live_section, render

    truth, _, _, rows = shadow_traffic(np.random.default_rng(2), 60, 0.3, 0.1)
    write_lines(tmp_path / "capture-1.jsonl", rows)
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "l.csv").write_text(
        "id,label\n" + "".join(f"r{i},{LABELS[t]}\n" for i, t in enumerate(truth)) + "r0,maybe\n"
    )
    evidence = live_evidence(
        read_capture(tmp_path, None, NOW), read_feedback(labels, LABELS), "m", {"cola"}, 2, "1", "2"
    )
    section = live_section(evidence, str(labels))
    page = render([], MonitorVerdict(False, (), 0.2), {}, section)
    assert "<h2>Versions on live traffic</h2>" in page
    v1 = evidence.versions["1"]
    assert "<tr><td>v1</td><td>60</td><td>60</td><td>0</td><td>60</td>" in page
    assert f"{v1.mcc.value:.3f} [{v1.mcc.low:.3f}, {v1.mcc.high:.3f}]" in page
    assert "<td>v2 against v1</td><td>60</td>" in page
    assert f"{labels / 'l.csv'}:62: label &#x27;maybe&#x27; is not in the model&#x27;s label set" in page
