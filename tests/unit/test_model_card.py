"""The model card a registered version carries as its description: the precision that ran, the data's
hash (the shipped CoLA's too), a decision said once, and tables that render as tables on the version page
(MLflow's UI renders the description as GitHub-flavoured Markdown; markdown-it with tables stands in)."""

import re

import mlflow
import pytest
from markdown_it import MarkdownIt

from sentclf.contract import INPUT_DATASET_SHA256_TAG, INPUT_DATASET_TAG, PRECISION_USED_TAG
from sentclf.dataset_snapshot import build_manifest
from sentclf.schema import COLA_LABELS, LabelSet
from tests.conftest import REPO_ROOT
from tests.unit.test_evaluate_classes import Tables, an_evaluation

import model_card
from gate import Check, Decision

SHIPPED = build_manifest(REPO_ROOT / "preprocess" / "data" / "cola", "preprocess/data/cola")


def data_run() -> mlflow.entities.Run:
    """A preprocess run on the shipped CoLA, with the lineage preprocess records for it."""
    with mlflow.start_run() as run:
        mlflow.set_tags({INPUT_DATASET_TAG: SHIPPED.source, INPUT_DATASET_SHA256_TAG: SHIPPED.sha256})
        mlflow.log_params(
            {"source": "cola (cola: in_domain_train.tsv, in_domain_dev.tsv)", "test_source": "x"}
        )
    return mlflow.get_run(run.info.run_id)


def train_run(**tags: str) -> mlflow.entities.Run:
    with mlflow.start_run() as run:
        mlflow.log_params({"precision": "auto", "epochs": "5", "learning_rate": "2e-4", "labels": "a|b"})
        mlflow.set_tags(tags)
    return mlflow.get_run(run.info.run_id)


def card(label_set: LabelSet = COLA_LABELS, promote: bool = True, **train_tags: str) -> str:
    evaluation = an_evaluation(label_set)
    if not promote:
        checks = (Check("confidence", False, "challenger better in 50.0% of 1000 paired resamples"),)
        evaluation.__dict__["decision"] = Decision(False, checks, "champion MCC 0.3523; confidence failed")
    facts = model_card.Provenance(
        data_run(),
        train_run(**train_tags),
        SHIPPED.as_dict()["files"],
        {"train": [10] * label_set.size, "validation": [2] * label_set.size},
    )
    return model_card.render(evaluation, facts)


def tables(markdown: str) -> list[list[list[str]]]:
    """Every table of the card as the version page shows it: rows of cell texts."""
    parser = Tables()
    parser.feed(MarkdownIt("commonmark").enable("table").render(markdown))
    return [rows for _, rows in parser.tables]


def test_the_card_says_the_precision_that_ran_and_what_was_asked(tracking_store):
    text = card(**{PRECISION_USED_TAG: "bf16"})
    assert "- precision: `bf16` (asked: `auto`)" in text
    parameters = next(rows for rows in tables(text) if rows[0] == ["parameter", "value"])
    assert "precision" not in {row[0] for row in parameters[1:]}
    assert ["epochs", "5"] in parameters and ["labels", "a|b"] in parameters  # a | stays in its cell
    assert "`fp32`" in card(**{PRECISION_USED_TAG: "fp32"}).split("## Recipe")[1].split("\n|")[0]
    assert "did not record what ran" in card()  # a train run from before the tag


def test_the_shipped_data_has_its_hash_and_files_on_the_card(tracking_store):
    text = card()
    assert f"- data sha256: `{SHIPPED.sha256}` (over the files below)" in text
    for name, sha256, _ in SHIPPED.files:
        assert f"  - `{name}`: `{sha256}`" in text
    assert "none" not in text.split("## Data")[1].split("## Recipe")[0]


@pytest.mark.parametrize("promote", [True, False])
def test_the_decision_is_said_once_without_doubled_words(tracking_store, promote):
    text = card(promote=promote)
    doubled = re.findall(r"\b([A-Za-z]+)\b[\s:;,(]+\1\b", text)
    assert not doubled, doubled
    if promote:
        assert "**Gate decision: promoted to champion** (every check passed)" in text
        assert "- decision: promoted (every check passed)" in text
    else:
        assert "**Gate decision: not promoted** (champion MCC 0.3523; confidence failed)" in text
        assert "- decision: kept (champion MCC 0.3523; confidence failed)" in text


@pytest.mark.parametrize("classes", [2, 40])
def test_tables_grow_down_not_sideways_and_render_as_tables(tracking_store, classes):
    names = list(COLA_LABELS.names) if classes == 2 else [f"topic {i}" for i in range(classes)]
    label_set = LabelSet.from_values(range(classes), names)
    text = card(label_set, **{PRECISION_USED_TAG: "bf16"})
    found = tables(text)
    assert [rows[0] for rows in found] == [
        ["parameter", "value"],
        ["metric", "value", "95% interval"],
        ["class", "train rows", "validation rows", "test rows", "precision", "recall", "F1"],
    ]
    for rows in found:
        assert all(len(row) == len(rows[0]) for row in rows), rows
    per_class = found[2]
    assert [row[0] for row in per_class[1:]] == names
    assert all(row[1:3] == ["10", "2"] for row in per_class[1:])
    metrics = {row[0]: row[1:] for row in found[1][1:]}
    mcc = an_evaluation(label_set).challenger.mcc
    assert metrics["MCC (test_mcc)"] == [f"{mcc.value:.4f}", f"[{mcc.low:.4f}, {mcc.high:.4f}]"]
    assert max(len(line) for line in text.splitlines()) < 200
