"""The pipeline (parent) run's headline: what the run list shows without opening a run. The child runs are
fakes in a real sqlite store, carrying the tags and metrics the steps log; the conductor reads them through
the MLflow API, as it does after a real step."""

import argparse

import mlflow
import pytest

from conductor import pipeline
from conductor.parameters import root_parameters, typed_default
from conductor.pipeline import Pipeline, StepResult
from sentclf.contract import (
    GATE_DECISION_TAG,
    GATE_SUMMARY_TAG,
    HEADLINE_PROMOTED_METRIC,
    HEADLINE_VERSION_METRIC,
    MODEL_VERSION_TAG,
    SERVER_IMAGE_TAG,
    TEST_MCC_HIGH_METRIC,
    TEST_MCC_LOW_METRIC,
    TEST_MCC_METRIC,
)


def default_args(**given: str) -> argparse.Namespace:
    """The pipeline's arguments as MLflow hands them to main.py: every root parameter, as a string."""
    values = {name: str(spec["default"]) for name, spec in root_parameters().items()} | given
    return argparse.Namespace(**values)


def test_the_defaults_change_nothing_and_equal_values_written_otherwise_are_not_changes():
    assert pipeline.changed_parameters(default_args()) == {}
    assert pipeline.changed_parameters(default_args(learning_rate="0.0002", epochs="5")) == {}
    assert typed_default(root_parameters()["learning_rate"]) == 2e-4


def test_a_run_name_names_the_data_and_what_differs_from_the_defaults_not_the_conductors_own():
    args = default_args(epochs="1", seed="7", use_cache="false", backend="kube", keep_images="9")
    assert pipeline.run_name(args) == "cola · epochs=1 seed=7"
    assert pipeline.run_name(args, "3", "promoted") == "v3 promoted · cola · epochs=1 seed=7"
    assert pipeline.run_name(default_args(), "4", "kept") == "v4 kept · cola"


def test_a_host_files_own_name_stands_for_it_and_long_values_are_cut(tmp_path):
    data = tmp_path / "labels" / "night-batch.tsv"
    data.parent.mkdir()
    data.write_text("sentence\tlabel\n")
    args = default_args(dataset=str(data), base_model="x" * 60)
    name = pipeline.run_name(args)
    assert name.startswith("night-batch.tsv · base_model=x")
    assert name.endswith("…") and len(name) < 60
    assert pipeline.run_name(default_args(dataset="glue/sst2")) == "glue/sst2"


def child(name: str, tags: dict[str, str], metrics: dict[str, float] | None = None) -> StepResult:
    """A finished child run of the active parent, read back through the API as the backend returns it."""
    with mlflow.start_run(run_name=name, nested=True) as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics or {})
    return StepResult(mlflow.get_run(run.info.run_id), key=f"{name}-key")


EVALUATE_METRICS = {
    TEST_MCC_METRIC: 0.3523,
    TEST_MCC_LOW_METRIC: 0.2643,
    TEST_MCC_HIGH_METRIC: 0.4410,
    "test_accuracy": 0.81,
    "latency_p99_ms": 7.0,
    "throughput_rps": 300.0,
    "parity_served_agreement": 1.0,  # not a headline figure: stays on the evaluate run
}


def pipeline_run(args: argparse.Namespace, decision: str, version: str, summary: str) -> mlflow.entities.Run:
    with mlflow.start_run() as parent:
        pipeline.describe_parent(parent, args)
        started = mlflow.get_run(parent.info.run_id)
        preprocess = child("preprocess", {})
        train = child("train", {MODEL_VERSION_TAG: version})
        building = child("building", {SERVER_IMAGE_TAG: f"cola-classifier-server:{version}-abc"})
        evaluate = child(
            "evaluate", {GATE_DECISION_TAG: decision, GATE_SUMMARY_TAG: summary}, EVALUATE_METRICS
        )
        Pipeline(args, started, backend=None).summarize(preprocess, train, building, evaluate, version)
    return mlflow.get_run(parent.info.run_id)


def test_the_parent_run_carries_the_headline_as_metrics_and_tags(tracking_store):
    run = pipeline_run(default_args(), "promoted", "3", "promoted (no champion yet; every check passed)")
    metrics, tags = run.data.metrics, run.data.tags
    assert metrics[HEADLINE_VERSION_METRIC] == 3.0 and metrics[HEADLINE_PROMOTED_METRIC] == 1.0
    assert (metrics[TEST_MCC_LOW_METRIC], metrics[TEST_MCC_METRIC], metrics[TEST_MCC_HIGH_METRIC]) == (
        0.2643,
        0.3523,
        0.4410,
    )
    assert metrics["test_accuracy"] == 0.81 and "parity_served_agreement" not in metrics
    assert tags[GATE_DECISION_TAG] == "promoted" and tags[MODEL_VERSION_TAG] == "3"
    assert tags["summary"] == (
        "version 3, test MCC 0.3523 [0.2643, 0.4410], promoted (no champion yet; every check passed)"
    )
    assert run.info.run_name == "v3 promoted · cola"


def test_two_pipelines_on_the_same_data_have_different_names_in_the_run_list(tracking_store):
    first = pipeline_run(default_args(), "promoted", "1", "promoted (no champion yet; every check passed)")
    second = pipeline_run(default_args(epochs="1"), "kept", "2", "kept (champion MCC 0.3523; ...)")
    assert second.data.metrics[HEADLINE_PROMOTED_METRIC] == 0.0
    listed = mlflow.search_runs(
        [tracking_store], filter_string=f"metrics.{HEADLINE_VERSION_METRIC} > 0", output_format="list"
    )
    names = {run.info.run_name for run in listed}
    assert names == {"v1 promoted · cola", "v2 kept · cola · epochs=1"}
    assert first.info.run_name != second.info.run_name


def test_a_run_still_going_is_named_by_its_data_and_parameters(tracking_store):
    with mlflow.start_run() as parent:
        pipeline.describe_parent(parent, default_args(precision="fp32"))
    run = mlflow.get_run(parent.info.run_id)
    assert run.info.run_name == "cola · precision=fp32"
    assert HEADLINE_VERSION_METRIC in run.data.tags["mlflow.note.content"]


@pytest.mark.parametrize("value", ["abc", ""])
def test_a_value_its_type_cannot_read_counts_as_changed(value):
    assert pipeline.changed_parameters(default_args(learning_rate=value)) == {"learning_rate": value}
