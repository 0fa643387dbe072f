"""The evaluate step for a multi-label version (its data's schema says `label_mode: multi`).

The served model's per-label probabilities on the test split are decided at the version's own thresholds
(its serving_config.json, tuned on validation by train), and measured as a multi-label user reads them:
micro and macro F1, subset accuracy and Hamming loss, each with a 95% bootstrap interval over the test
texts (sentclf.bootstrap's resampling, evaluate/stats.py), and per-label precision, recall and F1.

The gate is on micro-F1 by default: a floor (`min_micro_f1`), the latency budget, and, against a
multi-label champion with the same labels, the paired bootstrap of Δmicro-F1 on the same resampled texts
(min_delta and confidence, as for MCC). Slices and the label audit are single-label features and are not
computed here. The report (evaluation/report.html, report.json) and the model card (model_card.md, the
version's description) have multi-label sections of their own.
"""

from __future__ import annotations

import html
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from sentclf.bootstrap import Interval
from sentclf.contract import (
    GATE_DECISION_TAG,
    GATE_SUMMARY_TAG,
    SERVER_MEMORY_METRIC,
    TEST_MICRO_F1_METRIC,
    ModelRef,
)
from sentclf.multilabel_metrics import SUMMARY_KEYS, per_label, resampled_summary, summary
from sentclf.schema import LabelSet
from sentclf.text_model import TextClassifier
from sentclf.tracking import StepInputError, version_model_id

from gate import Check, Decision, GateConfig, current_champion, mlflow_check
from model_card import CARD_ARTIFACT
from stats import interval, resample_indices

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = {"hamming_loss"}


def is_multi_label(labels: np.ndarray) -> bool:
    """True for a test split whose labels are lists of label indices."""
    return len(labels) > 0 and not np.isscalar(labels[0])


def multi_hot(labels: np.ndarray, size: int) -> np.ndarray:
    targets = np.zeros((len(labels), size), dtype=bool)
    for row, indices in enumerate(labels):
        targets[row, np.asarray(indices, dtype=int)] = True
    return targets


@dataclass(frozen=True)
class VersionAnswers:
    """One version's per-label probabilities on the test texts and the thresholds it decides with."""

    version: str
    probabilities: np.ndarray
    thresholds: tuple[float, ...]

    @property
    def decisions(self) -> np.ndarray:
        return self.probabilities >= np.asarray(self.thresholds)


def offline_answers(model_name: str, version: str, texts: list[str]) -> VersionAnswers:
    """A registered version scored in process (the pyfunc's scorer) with its serving config's thresholds."""
    with tempfile.TemporaryDirectory(prefix="sentclf-offline-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=ModelRef(model_name, version).uri, dst_path=tmp)
        )
        classifier = TextClassifier.from_dir(local)
        if not classifier.config.multi_label:
            raise StepInputError(
                f"{model_name} version {version} is a single-label model, but the test data has several "
                "labels per text: train a version on this data (label_mode=multi). Nothing was promoted."
            )
        return VersionAnswers(version, classifier.probabilities(texts), classifier.config.label_thresholds())


def scored(targets: np.ndarray, decisions: np.ndarray, draws: np.ndarray) -> dict[str, Interval]:
    """Each summary metric with its 95% bootstrap interval."""
    values, samples = summary(targets, decisions), resampled_summary(targets, decisions, draws)
    return {key: interval(values[key], samples[key]) for key in SUMMARY_KEYS}


def gate(
    config: GateConfig,
    min_micro_f1: float,
    micro_f1: float,
    latency_p99_ms: float,
    champion: tuple[str, float, np.ndarray] | None,
) -> Decision:
    """Floor on micro-F1, latency budget, and against a champion (version, its micro-F1, Δmicro-F1 per
    paired resample) the delta and confidence checks."""
    checks = [
        mlflow_check(
            "floor",
            mlflow.models.MetricThreshold(threshold=min_micro_f1, greater_is_better=True),
            {"micro_f1": micro_f1},
            None,
            f"test micro-F1 {micro_f1:.4f} vs min_micro_f1 {min_micro_f1:.4f}",
        ),
        Check(
            "latency",
            latency_p99_ms <= config.latency_budget_ms,
            f"p99 at concurrency 1 {latency_p99_ms:.1f} ms vs budget {config.latency_budget_ms:.1f} ms",
        ),
    ]
    against = "no champion yet"
    if champion is not None:
        version, champion_f1, deltas = champion
        against = f"champion {version} micro-F1 {champion_f1:.4f}"
        delta = interval(micro_f1 - champion_f1, deltas)
        if config.min_delta > 0:
            checks.append(
                Check(
                    "delta",
                    delta.value >= config.min_delta,
                    f"Δmicro-F1 {delta} vs min_delta {config.min_delta}",
                )
            )
        share = float((deltas > 0).mean())
        checks.append(
            Check(
                "confidence",
                share >= config.confidence,
                f"challenger better in {share:.1%} of {len(deltas)} paired resamples vs confidence "
                f"{config.confidence:.0%} (Δmicro-F1 {delta})",
            )
        )
    promote = all(check.passed for check in checks)
    failed = [str(check) for check in checks if not check.passed]
    reasons = f"{against}; every check passed" if promote else f"{against}; {'; '.join(failed)}"
    return Decision(promote, tuple(checks), reasons)


def metric_dict(found: dict[str, Interval], labels: dict[str, float], served) -> dict[str, float]:
    """test_<metric> with _low/_high, test_<per-label>, and the serving figures."""
    metrics: dict[str, float] = {}
    for key, value in found.items():
        metrics |= {f"test_{key}": value.value, f"test_{key}_low": value.low, f"test_{key}_high": value.high}
    metrics |= {f"test_{key}": value for key, value in labels.items()}
    metrics |= dict(served.latency)
    metrics[SERVER_MEMORY_METRIC] = served.memory_peak_mb
    return {key: float(value) for key, value in metrics.items() if np.isfinite(value)}


def report_html(
    model: str, answers: VersionAnswers, label_set: LabelSet, found: dict[str, Interval], labels, decision
) -> str:
    """evaluation/report.html: the multi-label figures, per label, the thresholds and the gate."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(key)}</td><td>{v.value:.4f}</td><td>[{v.low:.4f}, {v.high:.4f}]</td></tr>"
        for key, v in found.items()
    )
    keys = [key.removeprefix("f1_label_") for key in labels if key.startswith("f1_label_")]
    per = "".join(
        f"<tr><td>{esc(name)}</td><td>{answers.thresholds[j]:.3f}</td>"
        + "".join(f"<td>{labels[f'{m}_label_{key}']:.4f}</td>" for m in ("precision", "recall", "f1"))
        + f"<td>{int(labels[f'support_label_{key}'])}</td></tr>"
        for j, (name, key) in enumerate(zip(label_set.names, keys, strict=True))
    )
    checks = "".join(f"<li>{esc(str(check))}</li>" for check in decision.checks)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(model)} version {answers.version}: "
        "multi-label evaluation</title></head><body>"
        f"<h1>{esc(model)} version {answers.version}: several labels per text</h1>"
        "<h2>Test metrics (95% bootstrap intervals)</h2><table><tr><th>metric</th><th>value</th>"
        f"<th>interval</th></tr>{rows}</table>"
        "<h2>Per label</h2><table><tr><th>label</th><th>threshold</th><th>precision</th><th>recall</th>"
        f"<th>F1</th><th>support</th></tr>{per}</table>"
        f"<h2>Gate</h2><p>{esc(decision.summary)}</p><ul>{checks}</ul></body></html>"
    )


def model_card(
    model: str,
    answers: VersionAnswers,
    label_set: LabelSet,
    found: dict[str, Interval],
    labels,
    decision,
    rows,
) -> str:
    """The version's model card (markdown): task, labels and thresholds, figures with intervals, gate."""
    lines = [
        f"# {model} version {answers.version}",
        "",
        "## Task",
        f"- several labels per text (multi-label): {len(label_set.names)} labels, each decided on its own "
        "(a sigmoid per label) at a threshold tuned on the validation split",
        "- labels and thresholds: "
        + ", ".join(f"`{n}` {t:.3f}" for n, t in zip(label_set.names, answers.thresholds, strict=True)),
        "",
        f"## Test metrics ({rows} held-out texts, 95% bootstrap intervals)",
        "| metric | value | interval |",
        "|---|---:|---:|",
    ]
    lines += [f"| {key} | {v.value:.4f} | [{v.low:.4f}, {v.high:.4f}] |" for key, v in found.items()]
    lines += [
        "",
        "## Per label",
        "| label | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    keys = [key.removeprefix("f1_label_") for key in labels if key.startswith("f1_label_")]
    for name, key in zip(label_set.names, keys, strict=True):
        values = [labels[f"{m}_label_{key}"] for m in ("precision", "recall", "f1")]
        cells = " | ".join(f"{v:.4f}" for v in values)
        lines.append(f"| {name.replace('|', '/')} | {cells} | {int(labels[f'support_label_{key}'])} |")
    lines += [
        "",
        "## Limits",
        f"- The figures hold for data like the {rows} test texts; a label's figures rest on its support.",
        "- The thresholds were tuned on the validation split, which is small: a label with few validation "
        "texts has a noisy threshold.",
        "",
        "## Gate",
        f"- decision: {decision.summary}",
    ]
    lines += [f"- {check}" for check in decision.checks]
    return "\n".join(lines) + "\n"


def conclude(config: GateConfig, min_micro_f1: float, inputs, data, served, args) -> Decision:
    """Metrics with intervals, the gate on micro-F1, report and card; the alias is the caller's to move."""
    targets = multi_hot(data.labels, data.label_set.size)
    ours = offline_answers(inputs.model_name, inputs.version, data.texts)
    answers = VersionAnswers(inputs.version, served.scores.probabilities, ours.thresholds)
    draws = resample_indices(len(targets), args.bootstrap_resamples, args.seed)
    found = scored(targets, answers.decisions, draws)
    labels = per_label(targets, answers.decisions, data.label_set.names)
    champion = None
    champion_version = current_champion(inputs.model_name)
    if champion_version is not None and champion_version != inputs.version:
        theirs = offline_answers(inputs.model_name, champion_version, data.texts)
        if theirs.probabilities.shape[1] != targets.shape[1]:
            raise StepInputError(
                f"champion version {champion_version} has {theirs.probabilities.shape[1]} labels, the data "
                f"{targets.shape[1]}: compare versions of the same label set. Nothing was promoted."
            )
        ours_f1 = resampled_summary(targets, answers.decisions, draws)["micro_f1"]
        theirs_f1 = resampled_summary(targets, theirs.decisions, draws)["micro_f1"]
        champion = (champion_version, summary(targets, theirs.decisions)["micro_f1"], ours_f1 - theirs_f1)
    decision = gate(config, min_micro_f1, found["micro_f1"].value, served.latency["latency_p99_ms"], champion)
    if champion_version == inputs.version:
        decision = Decision(False, decision.checks, "this version already is the champion")

    metrics = metric_dict(found, labels, served)
    mlflow.log_metrics(metrics)
    model_id = version_model_id(inputs.model_name, inputs.version)
    if model_id:
        mlflow.log_metrics(metrics, model_id=model_id)
    mlflow.set_tags(
        {
            GATE_DECISION_TAG: decision.verdict,
            GATE_SUMMARY_TAG: decision.summary,
            "promoted_to_champion": str(decision.promote).lower(),
            "champion_before": champion_version or "-",
        }
        | {f"gate.check.{check.name}": str(check) for check in decision.checks}
    )
    client = mlflow.MlflowClient()
    client.set_model_version_tag(
        inputs.model_name, inputs.version, TEST_MICRO_F1_METRIC, f"{metrics[TEST_MICRO_F1_METRIC]:.6f}"
    )
    mlflow.log_text(
        report_html(inputs.model_name, answers, data.label_set, found, labels, decision),
        "evaluation/report.html",
    )
    report = {
        "label_mode": "multi",
        "metrics": {key: [v.value, v.low, v.high] for key, v in found.items()},
        "per_label": labels,
        "thresholds": dict(zip(data.label_set.names, answers.thresholds, strict=True)),
        "gate": {"decision": decision.verdict, "reasons": decision.reasons},
    }
    mlflow.log_dict(report, "evaluation/report.json")
    card = model_card(inputs.model_name, answers, data.label_set, found, labels, decision, len(targets))
    mlflow.log_text(card, CARD_ARTIFACT)
    client.update_model_version(inputs.model_name, inputs.version, description=card)
    logger.info("test micro-F1 %s; %s", found["micro_f1"], decision.summary)
    logger.debug("report: %s", json.dumps(report)[:200])
    return decision
