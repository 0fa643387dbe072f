"""Slices of a multi-label version (evaluate/multilabel_slices.py): micro-F1 and subset accuracy per slice
with bootstrap intervals, flagged on Δmicro-F1 vs the rest by slices.py's rule; in the report, the card
and report.json. And a pair task's length buckets count the two texts together."""

import numpy as np
import pandas as pd

from sentclf.multilabel_metrics import resampled_summary, summary
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, TEXT_PAIR_COLUMN, LabelSet

import evaluate
import multilabel_metrics as ml
import multilabel_slices as ms
from results import LabelIssues
from slices import LENGTH_DIMENSION, TOO_FEW
from stats import resample_indices


def planted(rows: int = 240, seed: int = 3):
    """Targets and decisions right for 95% of texts, except channel `mail`'s, wrong for about half."""
    rng = np.random.default_rng(seed)
    targets = rng.random((rows, 4)) < 0.35
    targets[~targets.any(axis=1), 1] = True
    channel = np.array(
        ["web"] * (rows // 2) + ["mail"] * (rows // 4) + ["phone"] * (rows - rows // 2 - rows // 4)
    )
    decisions = targets.copy()
    noisy = rng.random(rows) < np.where(channel == "mail", 0.5, 0.05)
    decisions[noisy] = rng.random((int(noisy.sum()), 4)) < 0.35
    rare = np.array(["yes"] * 10 + ["no"] * (rows - 10))
    return targets, decisions, {"channel": channel.tolist(), "rare": rare.tolist()}


def test_a_worse_slice_is_flagged_and_its_values_are_the_multilabel_metrics():
    targets, decisions, groups = planted()
    found = ms.multilabel_slice_scores(targets, decisions, groups, resamples=300, seed=7)
    by = {(s.dimension, s.value): s for s in found}
    assert [s.value for s in found if s.dimension == "channel"] == ["web", "mail", "phone"]  # largest first
    mail = by[("channel", "mail")]
    assert mail.flagged and mail.delta_micro_f1.high < 0 and mail.note == ""
    assert not by[("channel", "web")].flagged and not by[("channel", "phone")].flagged
    inside = np.asarray(groups["channel"]) == "mail"
    expected = summary(targets[inside], decisions[inside])
    assert abs(mail.micro_f1.value - expected["micro_f1"]) < 1e-12
    assert abs(mail.subset_accuracy.value - expected["subset_accuracy"]) < 1e-12
    rest = summary(targets[~inside], decisions[~inside])["micro_f1"]
    assert abs(mail.delta_micro_f1.value - (expected["micro_f1"] - rest)) < 1e-12
    for s in found:
        assert s.micro_f1.low <= s.micro_f1.value <= s.micro_f1.high
    small = by[("rare", "yes")]
    assert small.rows == 10 and small.note == TOO_FEW and small.delta_micro_f1 is None and not small.flagged
    assert found == ms.multilabel_slice_scores(targets, decisions, groups, resamples=300, seed=7)


def test_the_pooled_resampling_is_the_per_resample_metric():
    targets, decisions, _ = planted(60)
    draws = resample_indices(60, 50, 2)
    counts = ms._TextCounts.of(targets, decisions)
    _, subset, micro_draws = ms._scores(counts, draws)
    looped = resampled_summary(targets, decisions, draws)
    np.testing.assert_allclose(micro_draws, looped["micro_f1"], atol=1e-12)
    assert subset.low == float(np.percentile(looped["subset_accuracy"], 2.5))


def test_length_slices_read_in_length_order():
    targets, decisions, _ = planted(120)
    lengths = ["10-14"] * 40 + ["3-5"] * 50 + ["6-9"] * 30
    found = ms.multilabel_slice_scores(targets, decisions, {LENGTH_DIMENSION: lengths}, 100, 1)
    assert [s.value for s in found] == ["3-5", "6-9", "10-14"]


def test_report_json_card_and_page_show_the_slices():
    targets, decisions, groups = planted()
    slices = tuple(ms.multilabel_slice_scores(targets, decisions, groups, resamples=200, seed=7))
    answers = ml.VersionAnswers("3", decisions.astype(np.float32), (0.5,) * 4)
    found = ml.scored(targets, answers.decisions, resample_indices(len(targets), 100, 1))
    names = ("a", "b", "c", "d<e>")
    labels = ml.per_label(targets, answers.decisions, names)
    decision = ml.gate(ml.GateConfig(0.0, 0.9, 100.0, 0.2), 0.5, found["micro_f1"].value, 10.0, None)
    audit = LabelIssues(7, 200, ({"file": "t.csv", "row": 4, "text": "<b>x</b>", "given_label": '["a"]',
                                  "suggested_label": '["a", "b"]', "score": 0.01},))  # fmt: skip
    page = ml.report_html("t", answers, LabelSet(names, names), found, labels, decision, slices, audit)
    assert "<h2>Slices" in page and "<td>mail</td>" in page and ">worse<" in page and TOO_FEW in page
    assert (
        "7 texts of 200 audited" in page
        and "&lt;b&gt;x&lt;/b&gt;" in page
        and "[&quot;a&quot;, &quot;b&quot;]" in page
    )
    assert "Label audit" not in ml.report_html("t", answers, LabelSet(names, names), found, labels, decision)
    card = ml.model_card("t", answers, LabelSet(names, names), found, labels, decision, len(targets), slices)
    assert "Significantly worse than the rest of the test texts (micro-F1" in card
    assert "channel = `mail`" in card and "channel = `web`" not in card
    assert ms.card_lines(tuple(s for s in slices if not s.flagged))[0].startswith("- No slice")
    assert slices[0].as_dict()["micro_f1"]["value"] == slices[0].micro_f1.value  # report.json


def test_a_pair_tasks_length_buckets_count_both_texts(monkeypatch):
    monkeypatch.setattr(evaluate, "token_counts", lambda texts: [len(t.split()) for t in texts])
    # Equal first texts: only the second texts' lengths tell the rows apart.
    test = pd.DataFrame(
        {
            TEXT_COLUMN: ["a b"] * 8,
            TEXT_PAIR_COLUMN: ["c"] * 4 + ["c d e f g h"] * 4,
            LABEL_COLUMN: [0, 1] * 4,
        }
    )
    buckets = evaluate.slice_groups(test, ())[LENGTH_DIMENSION]
    assert len(set(buckets[:4])) == 1 and len(set(buckets[4:])) == 1 and buckets[0] != buckets[4]
    assert buckets[0].startswith("4") and buckets[4].endswith("9")  # "a b [SEP] c": 4; with the long one: 9
