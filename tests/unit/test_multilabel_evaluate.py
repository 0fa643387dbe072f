"""The evaluate step for a multi-label version (evaluate/multilabel_metrics.py): metrics with bootstrap
intervals, the gate on micro-F1 (floor, latency, Δmicro-F1 against a champion), and the report and model
card sections, on fixed answers (the served path is the single-label one's, tested there)."""

import numpy as np

from sentclf.schema import LabelSet

import multilabel_metrics as ml
from gate import GateConfig
from stats import resample_indices

NAMES = ("billing", "login", "shipping|post")
CONFIG = GateConfig(min_delta=0.0, confidence=0.9, latency_budget_ms=100.0, min_mcc=0.2)


def answers_and_targets(rows: int = 60, noise: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = rng.random((rows, 3)) < 0.4
    targets[~targets.any(axis=1), 0] = True
    probs = np.clip(targets * 0.8 + rng.normal(0.1, noise, size=targets.shape), 0, 1).astype(np.float32)
    return targets, ml.VersionAnswers("3", probs, (0.5, 0.4, 0.6))


def test_the_split_labels_are_recognised_as_lists():
    labels = np.empty(2, dtype=object)
    labels[:] = [np.array([0, 2]), np.array([1])]
    assert ml.is_multi_label(labels) and not ml.is_multi_label(np.array([0, 1]))
    assert ml.multi_hot(labels, 3).tolist() == [[True, False, True], [False, True, False]]


def test_metrics_have_intervals_around_their_values():
    targets, answers = answers_and_targets()
    found = ml.scored(targets, answers.decisions, resample_indices(len(targets), 200, 1))
    assert set(found) == {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"}
    for value in found.values():
        assert value.low <= value.value <= value.high


def test_the_gate_floors_micro_f1_and_compares_with_a_champion():
    kept = ml.gate(CONFIG, 0.9, 0.8, 10.0, None)
    assert not kept.promote and "test micro-F1 0.8000 vs min_micro_f1 0.9000" in kept.summary
    assert ml.gate(CONFIG, 0.5, 0.8, 10.0, None).promote
    slow = ml.gate(CONFIG, 0.5, 0.8, 500.0, None)
    assert not slow.promote and "latency failed" in slow.summary
    worse = ml.gate(CONFIG, 0.5, 0.8, 10.0, ("2", 0.85, np.full(100, -0.05)))
    assert not worse.promote and "confidence failed" in worse.summary and "champion 2" in worse.summary
    better = ml.gate(CONFIG, 0.5, 0.8, 10.0, ("2", 0.7, np.full(100, 0.1)))
    assert better.promote


def test_report_and_card_name_every_label_with_its_threshold():
    targets, answers = answers_and_targets()
    found = ml.scored(targets, answers.decisions, resample_indices(len(targets), 100, 1))
    labels = ml.per_label(targets, answers.decisions, NAMES)
    decision = ml.gate(CONFIG, 0.5, found["micro_f1"].value, 10.0, None)
    label_set = LabelSet(NAMES, NAMES)
    page = ml.report_html("tickets", answers, label_set, found, labels, decision)
    assert "shipping|post" in page and "<td>0.600</td>" in page and "micro_f1" in page
    card = ml.model_card("tickets", answers, label_set, found, labels, decision, len(targets))
    assert "`login` 0.400" in card and "| shipping/post |" in card and "## Gate" in card
    assert f"| micro_f1 | {found['micro_f1'].value:.4f} |" in card
