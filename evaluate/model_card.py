"""The model card of a registered version, written where the facts are: what data it learned from
(snapshot hashes, rows per class, the label set), by what recipe (the train run's parameters, the code
commit), how well it does (test metrics with 95% intervals, per class, served latency), what can and
cannot be said from that, and the gate's decision with its reasons. It becomes the version's description
in the registry (what `mlflow ui` shows on the version's page) and the artifact model_card.md."""

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from sentclf.contract import (
    INPUT_DATASET_SHA256_TAG,
    INPUT_DATASET_SNAPSHOT_TAG,
    INPUT_DATASET_TAG,
    INT8_DECISION_TAG,
    PRECISION_USED_TAG,
    SERVED_VARIANT_TAG,
    TEXT_PAIR_TAG,
    TRAINING_FEW_SHOT,
    TRAINING_MODE_TAG,
    TRAINING_ROWS_TAG,
    TRAINING_UNLABELLED_ROWS_TAG,
    VALIDATION_MODE_TAG,
)
from sentclf.data import read_split
from sentclf.dataset_snapshot import MANIFEST, SNAPSHOT_DIR
from sentclf.schema import LABEL_COLUMN
from sentclf.tracking import StepInputError

from pair_rows import card_lines
from results import Evaluation

CARD_ARTIFACT = "model_card.md"
# Per-class figures on fewer test rows than this are called out as unreliable.
FEW_ROWS = 30
# Label sets up to this size are listed on one line of the card; larger ones only in the per-class table.
LISTED_CLASSES = 8


@dataclass(frozen=True)
class Provenance:
    """What the card says about where the version came from (read from the runs that made it)."""

    data_run: mlflow.entities.Run | None  # None when the run cannot be read (the card says so)
    train_run: mlflow.entities.Run | None
    files: list[dict]  # the data snapshot's manifest: name, sha256 (empty when there was none)
    rows_per_class: dict[str, list[int]]  # split -> rows of each class, in label-set order


def _run(run_id: str) -> mlflow.entities.Run | None:
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None


def provenance(evaluation: Evaluation) -> Provenance:
    inputs = evaluation.inputs
    version = mlflow.MlflowClient().get_model_version(inputs.model_name, inputs.version)
    data_run = _run(inputs.data_run_id)
    files: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sentclf-card-") as tmp:
        try:
            manifest = mlflow.artifacts.download_artifacts(
                run_id=inputs.data_run_id, artifact_path=f"{SNAPSHOT_DIR}/{MANIFEST}", dst_path=tmp
            )
            files = json.loads(Path(manifest).read_text()).get("files", [])
        except (OSError, mlflow.exceptions.MlflowException):
            pass  # data from a hub has no manifest
    size = evaluation.label_set.size
    rows = {}
    for split in ("train", "validation"):
        try:
            labels = read_split(inputs.data_run_id, split)[LABEL_COLUMN]
        except (StepInputError, mlflow.exceptions.MlflowException):
            continue  # the card says which splits it could count
        rows[split] = np.bincount(labels, minlength=size).tolist()
    rows["test"] = [c.support for c in evaluation.challenger.classes]
    return Provenance(data_run, _run(version.run_id) if version.run_id else None, files, rows)


def _cell(value: object) -> str:
    """A table cell: a `|` or a line break in a class name or a parameter would end the cell or the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric_from: int = 1) -> list[str]:
    """A Markdown table as MLflow's UI renders a version's description (showdown, GitHub flavour): one
    row per line, the columns from `numeric_from` on right-aligned. Tables grow down (one row per class,
    per parameter, per metric), never sideways, so a wide label set still fits the version page."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _value(interval) -> str:
    return f"{interval.value:.4f}"


def _range(interval) -> str:
    return f"[{interval.low:.4f}, {interval.high:.4f}]"


def _data_lines(data_tags: dict, data_params: dict, files: list[dict]) -> list[str]:
    sha256 = data_tags.get(INPUT_DATASET_SHA256_TAG)
    if sha256 is None:
        hashed = "none recorded (data from a hub has no files to hash)"
    elif INPUT_DATASET_SNAPSHOT_TAG in data_tags:
        hashed = f"`{sha256}` (over the files below, snapshotted into the pipeline run)"
    else:
        hashed = f"`{sha256}` (over the files below)"
    lines = [
        f"- source: `{data_tags.get(INPUT_DATASET_TAG, data_params.get('source', 'unknown'))}`",
        f"- held-out test data: `{data_params.get('test_source', 'unknown')}`",
        f"- data sha256: {hashed}",
    ]
    return lines + [f"  - `{f['name']}`: `{f['sha256']}`" for f in files if "name" in f and "sha256" in f]


def _label_set_line(names: Sequence[str]) -> str:
    """A few classes by index on one line; a larger label set in the per-class table (one row each)."""
    if len(names) > LISTED_CLASSES:
        return f"- label set: {len(names)} classes, in index order (0 first) in the per-class table below"
    return "- label set: " + ", ".join(f"{i} = `{n}`" for i, n in enumerate(names))


def _precision_line(train_tags: dict, train_params: dict) -> str:
    """The precision that ran (train's PRECISION_USED_TAG), with the one asked for when they differ."""
    asked, ran = train_params.get("precision"), train_tags.get(PRECISION_USED_TAG)
    if ran is None:
        return f"- precision: `{asked or 'unknown'}` asked (the train run did not record what ran)"
    return f"- precision: `{ran}`" + (f" (asked: `{asked}`)" if asked and asked != ran else "")


def _variant_lines(train_tags: dict) -> list[str]:
    """The ONNX variant served (train's SERVED_VARIANT_TAG) and, where int8 was asked, why it is or is not
    served (INT8_DECISION_TAG: int8 against fp32 on the test rows)."""
    served = train_tags.get(SERVED_VARIANT_TAG)
    lines = [f"- served variant: `{served}`"] if served else []
    if INT8_DECISION_TAG in train_tags:
        lines.append(f"- int8 decision: {train_tags[INT8_DECISION_TAG]}")
    return lines


def _training_line(train_tags: dict) -> str:
    """How the version was trained: few-shot (train/few_shot.py) or the fine-tune, on how many rows, and how
    it was validated; a train run older than these tags says nothing."""
    mode, rows = train_tags.get(TRAINING_MODE_TAG), train_tags.get(TRAINING_ROWS_TAG, "?")
    if mode is None:
        return "- training: fine-tune (the train run predates the training-mode tags)"
    validation = train_tags.get(VALIDATION_MODE_TAG, "unknown").replace("_", " ")
    if mode == TRAINING_FEW_SHOT:
        return (
            f"- training: **few-shot** (contrastive pairs + logistic head) on {rows} labelled rows; "
            f"validation: {validation}"
        )
    unlabelled = int(train_tags.get(TRAINING_UNLABELLED_ROWS_TAG) or 0)
    taught = f" and {unlabelled} unlabelled texts the teacher labelled" if unlabelled else ""
    return f"- training: fine-tune on {rows} labelled rows{taught}; validation: {validation}"


def _metric_rows(evaluation: Evaluation) -> list[tuple[str, str, str]]:
    challenger, served = evaluation.challenger, evaluation.served
    rows = [
        ("MCC (`test_mcc`)", _value(challenger.mcc), _range(challenger.mcc)),
        ("accuracy (`test_accuracy`)", _value(challenger.accuracy), _range(challenger.accuracy)),
        ("macro F1 (`test_f1_macro`)", _value(challenger.f1_macro), _range(challenger.f1_macro)),
        ("weighted F1 (`test_f1_weighted`)", _value(challenger.f1_weighted), _range(challenger.f1_weighted)),
        ("latency p50, ms (`latency_p50_ms`)", f"{served.latency['latency_p50_ms']:.2f}", ""),
        ("latency p99, ms (`latency_p99_ms`)", f"{served.latency['latency_p99_ms']:.2f}", ""),
        ("served = registered (`parity_served_agreement`)", f"{evaluation.parity.agreement:.4f}", ""),
    ]
    champion, comparison = evaluation.champion, evaluation.comparison
    if champion is not None and comparison is not None:
        rows += [
            (f"champion (version {champion.version}) MCC", _value(champion.mcc), _range(champion.mcc)),
            (
                "MCC gain over the champion (`delta_mcc`)",
                _value(comparison.delta_mcc),
                _range(comparison.delta_mcc),
            ),
            ("resamples where this version is better", f"{comparison.share_better:.4f}", ""),
        ]
    return rows


def render(evaluation: Evaluation, facts: Provenance) -> str:
    """The card as Markdown. MLflow shows it with single line breaks kept: one statement per line."""
    inputs, decision, challenger = evaluation.inputs, evaluation.decision, evaluation.challenger
    data_tags = facts.data_run.data.tags if facts.data_run else {}
    data_params = facts.data_run.data.params if facts.data_run else {}
    train_id = facts.train_run.info.run_id if facts.train_run else "unknown"
    train_tags = facts.train_run.data.tags if facts.train_run else {}
    train_params = facts.train_run.data.params if facts.train_run else {}
    verdict = "promoted to champion" if decision.promote else "not promoted"
    lines = [
        f"# Model card: {inputs.model_name} version {inputs.version}",
        "",
        f"**Gate decision: {verdict}** ({decision.reasons})",
        "",
        "## Data",
        f"- preprocess run: `{inputs.data_run_id}`{'' if facts.data_run else ' (not found)'}",
        *_data_lines(data_tags, data_params, facts.files),
        _label_set_line(evaluation.label_set.names),
        "",
        "## Recipe",
        f"- train run: `{train_id}`",
        f"- code commit: `{train_tags.get('mlflow.source.git.commit', 'unknown')}`",
        _precision_line(train_tags, train_params),
        *_variant_lines(train_tags),
        _training_line(train_tags),
        "",
        *table(
            ["parameter", "value"],
            [(f"`{k}`", f"`{v}`") for k, v in sorted(train_params.items()) if k != "precision"]
            or [("unknown", "")],
            numeric_from=2,
        ),
        "",
        "## Metrics (test rows, 95% bootstrap intervals)",
        f"{evaluation.rows} test rows, {evaluation.resamples} resamples; the served model (its image "
        f"`{inputs.server_image}`) over gRPC.",
        "",
        *table(["metric", "value", "95% interval"], _metric_rows(evaluation)),
        "",
        "## Per class",
        "",
    ]
    splits = [split for split in ("train", "validation") if split in facts.rows_per_class]
    lines += table(
        ["class", *(f"{split} rows" for split in splits), "test rows", "precision", "recall", "F1"],
        [
            (
                c.name,
                *(facts.rows_per_class[split][index] for split in splits),
                c.support,
                f"{c.precision:.4f}",
                f"{c.recall:.4f}",
                f"{c.f1:.4f}",
            )
            for index, c in enumerate(challenger.classes)
        ],
    )
    width = challenger.mcc.high - challenger.mcc.low
    few = [c.name for c in challenger.classes if c.support < FEW_ROWS]
    lines += [
        "",
        "## Limits",
        f"- The figures hold for data like the {evaluation.rows} held-out test rows (same source, same class "
        f"mix); the MCC interval is {width:.4f} wide, so smaller differences are not shown here.",
        "- Nothing here measures data from elsewhere or later: a new source, new topics or a shifted class "
        "mix (the preprocess step's drift check compares each new batch with the champion's data).",
        "- Latency was measured on the machine that ran this evaluation, one request at a time and under "
        "load.",
    ]
    if few:
        named = ", ".join(few[:LISTED_CLASSES]) + (
            f" and {len(few) - LISTED_CLASSES} more" if len(few) > LISTED_CLASSES else ""
        )
        lines.append(f"- Per-class figures rest on fewer than {FEW_ROWS} test rows for: {named}.")
    lines += card_lines(evaluation.pair_examples, data_tags.get(TEXT_PAIR_TAG))
    lines += slice_lines(evaluation)
    lines += ["", "## Gate", f"- decision: {decision.summary}"]
    lines += [f"- {check}" for check in decision.checks]
    return "\n".join(lines) + "\n"


def slice_lines(evaluation: Evaluation) -> list[str]:
    """The Limits section's lines on slices: those significantly worse than the rest (report.html has
    every slice)."""
    if not evaluation.slices:
        return []
    worse = evaluation.flagged_slices
    if not worse:
        return [
            f"- No slice of the test rows is significantly worse than the rest ({len(evaluation.slices)} "
            "slices by length and slice column; see evaluation/report.html)."
        ]
    return ["- Significantly worse than the rest of the test rows (accuracy, 95% interval below zero):"] + [
        f"  - {s.dimension} = `{s.value}` ({s.rows} rows): accuracy {_value(s.accuracy)} "
        f"{_range(s.accuracy)}, Δ vs rest {_value(s.delta_accuracy)} {_range(s.delta_accuracy)}"
        for s in worse
    ]


def publish(evaluation: Evaluation) -> str:
    """The card as the version's registry description and as the artifact model_card.md."""
    card = render(evaluation, provenance(evaluation))
    mlflow.log_text(card, CARD_ARTIFACT)
    mlflow.MlflowClient().update_model_version(
        evaluation.inputs.model_name, evaluation.inputs.version, description=card
    )
    return card
