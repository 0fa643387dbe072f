"""The model card of a registered version, written where the facts are: what data it learned from
(snapshot hashes, rows per class, the label set), by what recipe (the train run's parameters, the code
commit), how well it does (test metrics with 95% intervals, per class, served latency), what can and
cannot be said from that, and the gate's decision with its reasons. It becomes the version's description
in the registry (what `mlflow ui` shows on the version's page) and the artifact model_card.md."""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from sentclf.contract import GATE_KEPT, GATE_PROMOTED, INPUT_DATASET_SHA256_TAG, input_tag
from sentclf.data import read_split
from sentclf.schema import LABEL_COLUMN
from sentclf.tracking import StepInputError

from results import Evaluation

CARD_ARTIFACT = "model_card.md"
# Per-class figures on fewer test rows than this are called out as unreliable.
FEW_ROWS = 30


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
                run_id=inputs.data_run_id, artifact_path="dataset/manifest.json", dst_path=tmp
            )
            files = json.loads(Path(manifest).read_text()).get("files", [])
        except (OSError, mlflow.exceptions.MlflowException):
            pass  # data that did not come from host files (a hub id) has no snapshot
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


def _figure(interval) -> str:
    return f"{interval.value:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def render(evaluation: Evaluation, facts: Provenance) -> str:
    inputs, decision, challenger = evaluation.inputs, evaluation.decision, evaluation.challenger
    data_tags = facts.data_run.data.tags if facts.data_run else {}
    data_params = facts.data_run.data.params if facts.data_run else {}
    train_id = facts.train_run.info.run_id if facts.train_run else "unknown"
    train_tags = facts.train_run.data.tags if facts.train_run else {}
    train_params = facts.train_run.data.params if facts.train_run else {}
    names = evaluation.label_set.names
    lines = [
        f"# Model card: {inputs.model_name} version {inputs.version}",
        "",
        f"**Gate decision: {'promoted to champion' if decision.promote else GATE_KEPT}** "
        f"({decision.summary})",
        "",
        "## Data",
        f"- preprocess run: `{inputs.data_run_id}`{'' if facts.data_run else ' (not found)'}",
        f"- source: `{data_tags.get(input_tag('dataset'), data_params.get('source', 'unknown'))}`",
        f"- held-out test data: `{data_params.get('test_source', 'unknown')}`",
        f"- snapshot sha256: `{data_tags.get(INPUT_DATASET_SHA256_TAG, 'none (no host snapshot)')}`",
    ]
    lines += [f"  - `{f['name']}`: `{f['sha256']}`" for f in facts.files if "name" in f and "sha256" in f]
    lines += [
        "- label set: " + ", ".join(f"{i} = `{n}`" for i, n in enumerate(names)),
        "",
        "| rows per class | " + " | ".join(names) + " | total |",
        "| --- | " + " | ".join("---" for _ in names) + " | --- |",
    ]
    for split, counts in facts.rows_per_class.items():
        lines.append(f"| {split} | " + " | ".join(str(c) for c in counts) + f" | {sum(counts)} |")
    lines += [
        "",
        "## Recipe",
        f"- train run: `{train_id}`",
        f"- code commit: `{train_tags.get('mlflow.source.git.commit', 'unknown')}`",
        "- parameters: " + (", ".join(f"`{k}={v}`" for k, v in sorted(train_params.items())) or "unknown"),
        "",
        "## Metrics (test rows, 95% bootstrap intervals)",
        f"{evaluation.rows} test rows, {evaluation.resamples} resamples; the served model (its image "
        f"`{inputs.server_image}`) over gRPC.",
        "",
        "| metric | value [95% interval] |",
        "| --- | --- |",
        f"| test_mcc | {_figure(challenger.mcc)} |",
        f"| test_accuracy | {_figure(challenger.accuracy)} |",
        f"| test_f1_macro | {_figure(challenger.f1_macro)} |",
        f"| test_f1_weighted | {_figure(challenger.f1_weighted)} |",
        f"| latency_p50_ms | {evaluation.served.latency['latency_p50_ms']:.2f} |",
        f"| latency_p99_ms | {evaluation.served.latency['latency_p99_ms']:.2f} |",
        f"| parity_served_agreement | {evaluation.parity.agreement:.4f} |",
    ]
    if evaluation.champion is not None and evaluation.comparison is not None:
        lines += [
            f"| champion_test_mcc (version {evaluation.champion.version}) | "
            f"{_figure(evaluation.champion.mcc)} |",
            f"| delta_mcc | {_figure(evaluation.comparison.delta_mcc)} |",
            f"| share_resamples_challenger_better | {evaluation.comparison.share_better:.4f} |",
        ]
    lines += [
        "",
        "| class | test rows | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c.name} | {c.support} | {c.precision:.4f} | {c.recall:.4f} | {c.f1:.4f} |"
        for c in challenger.classes
    ]
    width = challenger.mcc.high - challenger.mcc.low
    few = [c.name for c in challenger.classes if c.support < FEW_ROWS]
    lines += [
        "",
        "## Limits",
        f"- The figures hold for data like the {evaluation.rows} held-out test rows (same source, same class "
        f"mix); the MCC interval is {width:.4f} wide, so differences smaller than that are not shown here.",
        "- Nothing here measures data from elsewhere or later: a new source, new topics or a shifted class "
        "mix (the preprocess step's drift check compares each new batch with the champion's data).",
        "- Latency was measured on the machine that ran this evaluation, one request at a time and under "
        "load.",
    ]
    if few:
        lines.append(f"- Per-class figures rest on fewer than {FEW_ROWS} test rows for: {', '.join(few)}.")
    lines += [
        "",
        "## Gate",
        f"- decision: {GATE_PROMOTED if decision.promote else GATE_KEPT}: {decision.summary}",
    ]
    lines += [f"- {check}" for check in decision.checks]
    return "\n".join(lines) + "\n"


def publish(evaluation: Evaluation) -> str:
    """The card as the version's registry description and as the artifact model_card.md."""
    card = render(evaluation, provenance(evaluation))
    mlflow.log_text(card, CARD_ARTIFACT)
    mlflow.MlflowClient().update_model_version(
        evaluation.inputs.model_name, evaluation.inputs.version, description=card
    )
    return card
