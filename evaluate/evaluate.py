"""Evaluate step: serve a registered version from its image, measure it over gRPC, and decide whether it
becomes `champion`.

1. Serve: start the version's server image (joining this step's network namespace), score the test split
   over gRPC with the standard KServe v2 client, measure latency one request at a time and throughput at
   each concurrency level, with the server's memory sampled under load. The server's log is an artifact
   (server/server.log) on every path, and the container is always removed.
2. Parity: the served labels must equal in-process ONNX Runtime's on the registered model for >= 99.5%
   of the rows, or the step fails.
3. Compare: the current champion is scored in process on the same rows; a paired bootstrap gives ΔMCC and
   Δaccuracy with 95% intervals and the share of resamples in which the challenger is better. The classes
   are the data's (its preprocess run's label set, which must be the version's `label_names`); MCC is
   multi-class beyond two classes, and the report has a per-class table and the named confusion matrix.
4. Slices (slices.py): the served model's scores per token-length bucket and per value of each slice column
   the data kept (CoLA's source; the user's `slice_columns`), each compared with the rest of the rows; a
   table and a figure in the report, the flagged slices in the model card.
5. Gate (gate.py): floor, latency budget, minimum delta and confidence; the decision and every reason
   become tags and part of evaluation/report.html. Only a complete evaluation reaches the gate, and the
   alias moves last.
"""

import argparse
import contextlib
import dataclasses
import functools
import logging
import os
import tempfile
import time
from collections.abc import Iterator

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from docker.models.containers import Container

from sentclf.backbone import token_counts
from sentclf.containers import docker_client, health_status, run_labels, running_server
from sentclf.contract import (
    CHAMPION_ALIAS,
    LABEL_AUDIT_ARTIFACT,
    LABEL_AUDIT_ROWS_METRIC,
    TEST_MCC_METRIC,
)
from sentclf.data import log_split_inputs, read_slice_columns, read_split
from sentclf.schema import LABEL_COLUMN, LabelSet
from sentclf.tracking import StepError, StepInputError, record_inputs, step_run

import figures
import model_card
import multilabel_metrics
import report
from gate import Decision, GateConfig, apply, current_champion, decide, record
from inputs import EvaluationInputs, resolve_inputs, resolve_label_set
from load import ServerFailed, Target, latency_profile, load_sweep, predict_all
from offline import Scores, score_version
from pair_rows import evaluation_items, joined, pair_examples
from results import Evaluation, EvaluationData, LabelIssues, Parity, Served, score_model
from slices import LENGTH_DIMENSION, length_buckets, pooled_values, slice_scores
from stats import paired_bootstrap, resample_indices

logger = logging.getLogger("evaluate")

PARITY_MIN_AGREEMENT = 0.995
# In a Kubernetes Job the server is a sidecar at this address (kubernetes/README.md); Docker is not there.
SERVER_ADDRESS_ENV = "SENTCLF_SERVER_ADDRESS"
SIDECAR_WAIT_S = 60.0
MIN_RESAMPLES = 1000
SERVER_LOG_ARTIFACT = "server/server.log"
LABEL_ISSUES_SHOWN = 10  # rows of the data's label audit in the report (the artifact has them all)


class ParityError(StepError):
    """The served model does not answer as the registered model does."""


def concurrency_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of integers, got {text!r}"
        ) from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be integers >= 1, got {text!r}")
    return levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-version", required=True, help="a version number or an alias")
    parser.add_argument("--server-image", default="", help="default: the version's server_image tag")
    parser.add_argument("--data-run-id", default="", help="default: the version's own data, else the newest")
    parser.add_argument("--registered-model-name", required=True)
    parser.add_argument("--serving-model-name", default="", help="default: the name the image answers to")
    parser.add_argument("--concurrency-levels", type=concurrency_levels, required=True, help="e.g. 1,4,16,64")
    parser.add_argument("--requests-per-level", type=int, required=True)
    parser.add_argument(
        "--latency-requests", type=int, required=True, help="the gate's latency: the first N test rows"
    )
    parser.add_argument("--min-delta", type=float, required=True)
    parser.add_argument("--confidence", type=float, required=True)
    parser.add_argument("--latency-budget-ms", type=float, required=True)
    parser.add_argument("--min-mcc", type=float, required=True)
    parser.add_argument("--bootstrap-resamples", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    # Not required: callers from before multi-label versions leave it out (MLproject passes its default).
    parser.add_argument(
        "--min-micro-f1", type=float, default=0.5, help="a multi-label version's floor (test micro-F1)"
    )
    args = parser.parse_args(argv)
    problems = [
        message
        for ok, message in (
            (args.requests_per_level >= 1, f"requests_per_level must be >= 1, got {args.requests_per_level}"),
            (args.latency_requests >= 1, f"latency_requests must be >= 1, got {args.latency_requests}"),
            (args.min_delta >= 0, f"min_delta must be >= 0, got {args.min_delta}"),
            (0 < args.confidence <= 1, f"confidence must be in (0, 1], got {args.confidence}"),
            (args.latency_budget_ms > 0, f"latency_budget_ms must be > 0, got {args.latency_budget_ms}"),
            (-1 <= args.min_mcc <= 1, f"min_mcc must be in [-1, 1], got {args.min_mcc}"),
            (
                args.bootstrap_resamples >= MIN_RESAMPLES,
                f"bootstrap_resamples must be >= {MIN_RESAMPLES}, got {args.bootstrap_resamples}",
            ),
        )
        if not ok
    ]
    if problems:
        parser.error("; ".join(problems))
    return args


@contextlib.contextmanager
def the_server(inputs: EvaluationInputs) -> Iterator[tuple[Container | None, int, float]]:
    """(container, gRPC port, seconds to SERVING) of the server to measure: the version's image started
    here, or, in a cluster, the sidecar already running at SENTCLF_SERVER_ADDRESS (no Docker there)."""
    address = os.environ.get(SERVER_ADDRESS_ENV, "")
    if not address:
        with running_server(
            inputs.server_image,
            name_prefix="sentclf-evaluate",
            labels=run_labels(mlflow.active_run()),
            keep_log=lambda text: mlflow.log_text(text, SERVER_LOG_ARTIFACT),
        ) as started:
            yield started
        return
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise StepInputError(
            f"{SERVER_ADDRESS_ENV}={address!r}: expected 127.0.0.1:<port> (the Job's sidecar)"
        )
    deadline = time.monotonic() + SIDECAR_WAIT_S
    while health_status(int(port)) != "SERVING":
        if time.monotonic() > deadline:
            raise ServerFailed(f"the server at {address} is not SERVING after {SIDECAR_WAIT_S:.0f}s")
        time.sleep(0.5)
    yield None, int(port), float("nan")  # started by the kubelet: its start-up is not ours to time


def serve_and_measure(inputs: EvaluationInputs, texts: list[str], args) -> Served:
    """Everything measured over gRPC, with the server's log kept on every path."""
    with the_server(inputs) as (container, port, seconds_to_serving):
        target = Target(port, inputs.served_name, inputs.version)
        try:
            labels, probabilities = predict_all(target, texts, container)
            # The first rows, not all: a test split of 10,000 would otherwise hold the step for minutes
            # one request at a time, and a thousand samples already place a p99.
            latency, samples = latency_profile(target, texts[: args.latency_requests], container)
            load, memory_peak = load_sweep(
                target, texts, args.concurrency_levels, args.requests_per_level, container
            )
        except ServerFailed as error:
            tail = container.logs(tail=30).decode(errors="replace") if _exists(container) else "(no log here)"
            raise ServerFailed(
                f"{error}. Nothing was promoted. The server's log is the artifact {SERVER_LOG_ARTIFACT}; "
                f"its last lines:\n{tail}"
            ) from None
    image_size = (
        docker_client().images.get(inputs.server_image).attrs["Size"] / 1e6 if container else float("nan")
    )
    return Served(
        Scores(labels, probabilities), latency, samples, load, memory_peak, seconds_to_serving, image_size
    )


def _exists(container: Container | None) -> bool:
    if container is None:
        return False
    try:
        container.reload()
    except Exception:  # noqa: BLE001
        return False
    return True


def check_parity(served: Scores, offline: Scores) -> Parity:
    agreement = float((served.labels == offline.labels).mean())
    parity = Parity(
        agreement, float(np.abs(served.probabilities - offline.probabilities).max()), PARITY_MIN_AGREEMENT
    )
    mlflow.log_metrics(
        {"parity_served_agreement": agreement, "parity_served_max_abs_prob_diff": parity.max_abs_diff}
    )
    if agreement < PARITY_MIN_AGREEMENT:
        raise ParityError(
            f"the served model agrees with the registered model on only {agreement:.2%} of the test rows "
            f"(required {PARITY_MIN_AGREEMENT:.1%}; max |Δprobability| {parity.max_abs_diff:.3g}): the "
            "image does not serve what was registered. Rebuild it with `mlflow run building`. Nothing was "
            "promoted."
        )
    return parity


def check_classes(scores: Scores, inputs: EvaluationInputs, label_set: LabelSet) -> None:
    """The served model answers with one probability per class of the data's label set."""
    width = scores.probabilities.shape[1]
    if width != label_set.size:
        raise StepInputError(
            f"{inputs.model_name} version {inputs.version} answers with {width} class probabilities, but "
            f"the test data of preprocess run {inputs.data_run_id} has {label_set.size} classes "
            f"{list(label_set.names)}: evaluate it on the data it was trained on (-P data_run_id=...), or "
            "train a version on this data first. Nothing was promoted."
        )


def judge(
    config: GateConfig,
    inputs: EvaluationInputs,
    data: EvaluationData,
    served: Served,
    parity: Parity,
    args: argparse.Namespace,
) -> Evaluation:
    """Both models' scores on the same resampled rows, their comparison and the gate's decision."""
    labels, classes = data.labels, data.label_set.size
    draws = resample_indices(len(labels), args.bootstrap_resamples, args.seed)
    challenger = score_model(inputs.version, labels, served.scores.labels, draws, data.label_set)
    started = time.perf_counter()
    slices = slice_scores(
        labels, served.scores.labels, data.groups, classes, args.bootstrap_resamples, args.seed
    )
    if slices:
        mlflow.log_metric("slices_seconds", time.perf_counter() - started)
    found = functools.partial(
        Evaluation,
        inputs=inputs,
        label_set=data.label_set,
        rows=len(labels),
        challenger=challenger,
        parity=parity,
        served=served,
        resamples=args.bootstrap_resamples,
        requests_per_level=args.requests_per_level,
        slices=tuple(slices),
        label_issues=read_label_issues(inputs.data_run_id),
    )
    champion_version = current_champion(inputs.model_name)
    if champion_version is None or champion_version == inputs.version:
        note = "No champion yet." if champion_version is None else "This version already is the champion."
        decision = decide(config, challenger.mcc.value, served.latency["latency_p99_ms"])
        if champion_version == inputs.version:
            decision = Decision(False, decision.checks, "this version already is the champion")
        return found(champion=None, comparison=None, no_comparison=note, decision=decision)
    champion_answers = score_version(inputs.model_name, champion_version, data.texts)
    check_classes(champion_answers, dataclasses.replace(inputs, version=champion_version), data.label_set)
    champion = score_model(champion_version, labels, champion_answers.labels, draws, data.label_set)
    comparison = paired_bootstrap(labels, served.scores.labels, champion_answers.labels, draws, classes)
    decision = decide(
        config, challenger.mcc.value, served.latency["latency_p99_ms"], champion.mcc.value, comparison
    )
    return found(champion=champion, comparison=comparison, no_comparison="", decision=decision)


def log_evaluation(evaluation: Evaluation) -> None:
    """Metrics, tags, figures, evaluation/report.html and evaluation/report.json of the active run."""
    metrics = evaluation.metrics()
    finite = {k: v for k, v in metrics.items() if np.isfinite(v)}
    decision, inputs = evaluation.decision, evaluation.inputs
    champion_before = evaluation.champion.version if evaluation.champion else None
    record(finite, inputs.model_name, inputs.version, decision, champion_before)
    mlflow.MlflowClient().set_model_version_tag(
        inputs.model_name, inputs.version, TEST_MCC_METRIC, f"{metrics[TEST_MCC_METRIC]:.6f}"
    )

    served = evaluation.served
    drawn = {
        "test confusion matrix (served model)": figures.confusion_figure(
            evaluation.challenger.confusion,
            evaluation.label_set.names,
            "Test confusion matrix (served model)",
        ),
        "latency histogram": figures.latency_histogram(
            served.latency_samples, served.latency["latency_p50_ms"], served.latency["latency_p99_ms"]
        ),
        "throughput and p99 against concurrency": figures.load_curve(served.load),
    }
    files = ["test_confusion_matrix.png", "latency_histogram.png", "load_curve.png"]
    if evaluation.slices:
        drawn["accuracy by slice"] = figures.slice_figure(
            evaluation.slices, evaluation.challenger.accuracy.value
        )
        files.append("slices.png")
    uris = []
    for (title, figure), file in zip(drawn.items(), files, strict=True):
        mlflow.log_figure(figure, f"evaluation/{file}")
        uris.append((title, figures.as_data_uri(figure)))
        plt.close(figure)
    report_html = report.render(evaluation, run_id=mlflow.active_run().info.run_id, figures=uris)
    mlflow.log_text(report_html, "evaluation/report.html")
    mlflow.log_dict(evaluation.summary(), "evaluation/report.json")


def run(args: argparse.Namespace) -> None:
    inputs = resolve_inputs(
        args.registered_model_name,
        args.model_version,
        args.server_image,
        args.data_run_id,
        args.serving_model_name,
    )
    record_inputs(
        model_version=inputs.version,
        server_image=inputs.server_image,
        data_run_id=inputs.data_run_id,
        served_name=inputs.served_name,
    )
    label_set = resolve_label_set(inputs.model_name, inputs.version, inputs.data_run_id)
    slice_columns = read_slice_columns(inputs.data_run_id)
    test = read_split(inputs.data_run_id, "test", slice_columns)
    log_split_inputs(inputs.data_run_id, {"test": test})
    texts = evaluation_items(test)  # a sentence-pair task's rows as (text, text_pair) (pair_rows.py)
    data = EvaluationData(texts, test[LABEL_COLUMN].to_numpy(), label_set, slice_groups(test, slice_columns))
    mlflow.log_param("test_rows", len(test))
    config = GateConfig(args.min_delta, args.confidence, args.latency_budget_ms, args.min_mcc)

    served = serve_and_measure(inputs, data.texts, args)
    conclude(config, inputs, data, served, args)


def read_label_issues(data_run_id: str, shown: int = LABEL_ISSUES_SHOWN) -> LabelIssues | None:
    """The top of the data run's label audit; None where it has none (turned off, or an older run)."""
    with tempfile.TemporaryDirectory(prefix="sentclf-audit-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=data_run_id, artifact_path=LABEL_AUDIT_ARTIFACT, dst_path=tmp
            )
        except (OSError, mlflow.exceptions.MlflowException):
            return None
        issues = pd.read_csv(path, keep_default_na=False)
    try:
        audited = int(mlflow.get_run(data_run_id).data.metrics.get(LABEL_AUDIT_ROWS_METRIC, 0))
    except mlflow.exceptions.MlflowException:
        audited = 0
    return LabelIssues(len(issues), audited, tuple(issues.head(shown).to_dict("records")))


def slice_groups(test, slice_columns: tuple[str, ...]) -> dict[str, list[str]]:
    """Dimension -> each test row's slice: its length bucket (backbone tokens), and its value of each
    slice column the data kept."""
    groups = {LENGTH_DIMENSION: length_buckets(token_counts(joined(evaluation_items(test))))}
    for name in slice_columns:
        if name in test.columns:
            groups[name] = pooled_values(test[name].astype(str).tolist())
    return groups


def conclude(
    config: GateConfig, inputs: EvaluationInputs, data: EvaluationData, served: Served, args
) -> Evaluation | None:
    """Parity, the comparison with the champion, the decision, the report; the alias moves last, so only
    an evaluation that got this far moves it."""
    check_classes(served.scores, inputs, data.label_set)
    parity = check_parity(served.scores, score_version(inputs.model_name, inputs.version, data.texts))
    if multilabel_metrics.is_multi_label(data.labels):  # several labels per text: its own metrics and gate
        issues = read_label_issues(inputs.data_run_id)
        decision = multilabel_metrics.conclude(config, args.min_micro_f1, inputs, data, served, args, issues)
        apply(decision, inputs.model_name, inputs.version)
        return None
    evaluation = judge(config, inputs, data, served, parity, args)
    examples = pair_examples(data.texts, data.labels, served.scores.labels, data.label_set.names)
    evaluation = dataclasses.replace(evaluation, pair_examples=examples)
    log_evaluation(evaluation)
    model_card.publish(evaluation)
    logger.info(
        "test MCC %s; p50 %.2f ms, p99 %.2f ms; %s: %s",
        evaluation.challenger.mcc,
        served.latency["latency_p50_ms"],
        served.latency["latency_p99_ms"],
        CHAMPION_ALIAS,
        evaluation.decision.summary,
    )
    apply(evaluation.decision, inputs.model_name, inputs.version)
    return evaluation


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("evaluate"):
        run(args)


if __name__ == "__main__":
    main()
