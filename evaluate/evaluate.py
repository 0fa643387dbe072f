"""Evaluate step: serve a registered version from its image, measure it over gRPC, and decide whether it
becomes `champion`.

1. Serve: start the version's server image (joining this step's network namespace), score the test split
   over gRPC with the standard KServe v2 client, measure latency one request at a time and throughput at
   each concurrency level, with the server's memory sampled under load. The server's log is an artifact
   (server/server.log) on every path, and the container is always removed.
2. Parity: the served labels must equal in-process ONNX Runtime's on the registered model for >= 99.5%
   of the rows, or the step fails.
3. Compare: the current champion is scored in process on the same rows; a paired bootstrap gives ΔMCC and
   Δaccuracy with 95% intervals and the share of resamples in which the challenger is better.
4. Gate (gate.py): floor, latency budget, minimum delta and confidence; the decision and every reason
   become tags and part of evaluation/report.html. Only a complete evaluation reaches the gate, and the
   alias moves last.
"""

import argparse
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator

import matplotlib.pyplot as plt
import mlflow
import numpy as np
from docker.models.containers import Container

from sentclf.containers import docker_client, health_status, run_labels, running_server
from sentclf.data import read_split
from sentclf.metrics import classification_metrics
from sentclf.plots import confusion_figure
from sentclf.schema import CHAMPION_ALIAS, LABEL_COLUMN, TEXT_COLUMN
from sentclf.tracking import StepError, StepInputError, record_inputs, step_run

import figures
import report
from gate import Decision, GateConfig, apply, current_champion, decide
from inputs import EvaluationInputs, resolve_inputs
from load import ServerFailed, Target, latency_profile, load_sweep, predict_all
from offline import Scores, score_version
from stats import PairedComparison, mcc_interval, paired_bootstrap, resample_indices
from stats import interval as bootstrap_interval

logger = logging.getLogger("evaluate")

PARITY_MIN_AGREEMENT = 0.995
# In a Kubernetes Job the server is a sidecar at this address (kubernetes/README.md); Docker is not there.
SERVER_ADDRESS_ENV = "SENTCLF_SERVER_ADDRESS"
SIDECAR_WAIT_S = 60.0
MIN_RESAMPLES = 1000
SERVER_LOG_ARTIFACT = "server/server.log"


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
    parser.add_argument("--serving-model-name", required=True)
    parser.add_argument("--concurrency-levels", type=concurrency_levels, required=True, help="e.g. 1,4,16,64")
    parser.add_argument("--requests-per-level", type=int, required=True)
    parser.add_argument("--min-delta", type=float, required=True)
    parser.add_argument("--confidence", type=float, required=True)
    parser.add_argument("--latency-budget-ms", type=float, required=True)
    parser.add_argument("--min-mcc", type=float, required=True)
    parser.add_argument("--bootstrap-resamples", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    problems = [
        message
        for ok, message in (
            (args.requests_per_level >= 1, f"requests_per_level must be >= 1, got {args.requests_per_level}"),
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


@dataclasses.dataclass
class Served:
    """What the serving phase measured."""

    scores: Scores
    latency: dict[str, float]
    latency_samples: list[float]
    load: list[dict[str, float]]
    memory_peak_mb: float
    seconds_to_serving: float
    image_size_mb: float


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


def serve_and_measure(inputs: EvaluationInputs, serving_model_name: str, texts: list[str], args) -> Served:
    """Everything measured over gRPC, with the server's log kept on every path."""
    with the_server(inputs) as (container, port, seconds_to_serving):
        target = Target(port, serving_model_name, inputs.version)
        try:
            labels, probabilities = predict_all(target, texts, container)
            latency, samples = latency_profile(target, texts, container)
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


def check_parity(served: Scores, offline: Scores) -> dict[str, float]:
    agreement = float((served.labels == offline.labels).mean())
    parity = {
        "agreement": agreement,
        "max_abs_diff": float(np.abs(served.probabilities - offline.probabilities).max()),
        "required": PARITY_MIN_AGREEMENT,
    }
    mlflow.log_metrics(
        {"parity_served_agreement": agreement, "parity_served_max_abs_prob_diff": parity["max_abs_diff"]}
    )
    if agreement < PARITY_MIN_AGREEMENT:
        raise ParityError(
            f"the served model agrees with the registered model on only {agreement:.2%} of the test rows "
            f"(required {PARITY_MIN_AGREEMENT:.1%}; max |Δprobability| {parity['max_abs_diff']:.3g}): the "
            "image does not serve what was registered. Rebuild it with `mlflow run building`. Nothing was "
            "promoted."
        )
    return parity


@dataclasses.dataclass
class ModelScores:
    """One model's headline scores on the test rows, with bootstrap intervals."""

    version: str
    mcc: object
    accuracy: object
    f1_macro: float


def model_scores(version: str, labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray) -> ModelScores:
    accuracy = (labels[draws] == predictions[draws]).mean(axis=1)
    return ModelScores(
        version,
        mcc_interval(labels, predictions, draws),
        bootstrap_interval(float((labels == predictions).mean()), accuracy),
        classification_metrics(labels, predictions)["f1_macro"],
    )


def judge(
    config: GateConfig, name: str, version: str, texts: list[str], labels: np.ndarray, served: Served, args
) -> tuple[Decision, ModelScores, ModelScores | None, PairedComparison | None, str]:
    """The gate's decision, from the served answers and the champion's on the same rows."""
    draws = resample_indices(len(labels), args.bootstrap_resamples, args.seed)
    challenger = model_scores(version, labels, served.scores.labels, draws)
    champion_version = current_champion(name)
    if champion_version is None or champion_version == version:
        note = "No champion yet." if champion_version is None else "This version already is the champion."
        decision = decide(config, challenger.mcc.value, served.latency["latency_p99_ms"])
        if champion_version == version:
            decision = Decision(False, decision.checks, "kept (this version already is the champion)")
        return decision, challenger, None, None, note
    champion_answers = score_version(name, champion_version, texts)
    champion = model_scores(champion_version, labels, champion_answers.labels, draws)
    comparison = paired_bootstrap(labels, served.scores.labels, champion_answers.labels, draws)
    decision = decide(
        config, challenger.mcc.value, served.latency["latency_p99_ms"], champion.mcc.value, comparison
    )
    return decision, challenger, champion, comparison, ""


def log_results(
    inputs: EvaluationInputs,
    labels: np.ndarray,
    served: Served,
    parity: dict,
    judged: tuple,
    args,
) -> None:
    decision, challenger, champion, comparison, note = judged
    metrics = {f"test_{k}": v for k, v in classification_metrics(labels, served.scores.labels).items()}
    metrics |= {"test_mcc_low": challenger.mcc.low, "test_mcc_high": challenger.mcc.high}
    metrics |= {"test_accuracy_low": challenger.accuracy.low, "test_accuracy_high": challenger.accuracy.high}
    metrics |= served.latency
    for row in served.load:
        level = row["concurrency"]
        metrics |= {
            f"throughput_rps_c{level}": row["throughput_rps"],
            f"latency_p50_ms_c{level}": row["p50_ms"],
            f"latency_p99_ms_c{level}": row["p99_ms"],
        }
    metrics |= {
        "throughput_rps": max(row["throughput_rps"] for row in served.load),
        "server_memory_peak_mb": served.memory_peak_mb,
        "server_image_size_mb": served.image_size_mb,
        "server_seconds_to_serving": served.seconds_to_serving,
    }
    if champion is not None:
        metrics |= {
            "champion_test_mcc": champion.mcc.value,
            "champion_test_mcc_low": champion.mcc.low,
            "champion_test_mcc_high": champion.mcc.high,
            "delta_mcc": comparison.delta_mcc.value,
            "delta_mcc_low": comparison.delta_mcc.low,
            "delta_mcc_high": comparison.delta_mcc.high,
            "delta_accuracy": comparison.delta_accuracy.value,
            "delta_accuracy_low": comparison.delta_accuracy.low,
            "delta_accuracy_high": comparison.delta_accuracy.high,
            "share_resamples_challenger_better": comparison.share_better,
        }
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
    mlflow.set_tags(
        {
            "gate.decision": "promoted" if decision.promote else "kept",
            "gate.summary": decision.summary,
            "promoted_to_champion": str(decision.promote).lower(),
            "champion_before": champion.version if champion else "-",
        }
        | {f"gate.check.{check.name}": str(check) for check in decision.checks}
    )
    mlflow.MlflowClient().set_model_version_tag(
        inputs.model_name, inputs.version, "test_mcc", f"{metrics['test_mcc']:.6f}"
    )

    drawn = {
        "test confusion matrix (served model)": confusion_figure(
            labels, served.scores.labels, "Test confusion matrix (served model)"
        ),
        "latency histogram": figures.latency_histogram(
            served.latency_samples, served.latency["latency_p50_ms"], served.latency["latency_p99_ms"]
        ),
        "throughput and p99 against concurrency": figures.load_curve(served.load),
    }
    files = ("test_confusion_matrix.png", "latency_histogram.png", "load_curve.png")
    uris = []
    for (title, figure), file in zip(drawn.items(), files, strict=True):
        mlflow.log_figure(figure, f"evaluation/{file}")
        uris.append((title, figures.as_data_uri(figure)))
        plt.close(figure)
    mlflow.log_text(
        report.render(
            model_name=inputs.model_name,
            version=inputs.version,
            server_image=inputs.server_image,
            data_run_id=inputs.data_run_id,
            run_id=mlflow.active_run().info.run_id,
            rows=len(labels),
            decision=decision,
            challenger=challenger,
            champion=champion,
            comparison=comparison,
            no_comparison=note,
            resamples=args.bootstrap_resamples,
            parity=parity,
            latency=served.latency,
            load=served.load,
            memory_peak_mb=served.memory_peak_mb,
            image_size_mb=served.image_size_mb,
            seconds_to_serving=served.seconds_to_serving,
            requests_per_level=args.requests_per_level,
            figures=uris,
        ),
        "evaluation/report.html",
    )
    mlflow.log_dict(
        {
            "metrics": metrics,
            "decision": {
                "promote": decision.promote,
                "summary": decision.summary,
                "checks": [str(c) for c in decision.checks],
            },
            "parity": parity,
            "load": served.load,
        },
        "evaluation/report.json",
    )


def run(args: argparse.Namespace) -> None:
    inputs = resolve_inputs(
        args.registered_model_name, args.model_version, args.server_image, args.data_run_id
    )
    record_inputs(
        model_version=inputs.version, server_image=inputs.server_image, data_run_id=inputs.data_run_id
    )
    test = read_split(inputs.data_run_id, "test")
    texts, labels = test[TEXT_COLUMN].tolist(), test[LABEL_COLUMN].to_numpy()
    mlflow.log_param("test_rows", len(test))
    config = GateConfig(args.min_delta, args.confidence, args.latency_budget_ms, args.min_mcc)

    served = serve_and_measure(inputs, args.serving_model_name, texts, args)
    conclude(config, inputs, texts, labels, served, args)


def conclude(
    config: GateConfig, inputs: EvaluationInputs, texts: list[str], labels: np.ndarray, served: Served, args
) -> Decision:
    """Parity, the comparison with the champion, the decision, the report; the alias moves last, so only
    an evaluation that got this far moves it."""
    parity = check_parity(served.scores, score_version(inputs.model_name, inputs.version, texts))
    judged = judge(config, inputs.model_name, inputs.version, texts, labels, served, args)
    log_results(inputs, labels, served, parity, judged, args)
    decision = judged[0]
    logger.info(
        "test MCC %s; p50 %.2f ms, p99 %.2f ms; %s: %s",
        judged[1].mcc,
        served.latency["latency_p50_ms"],
        served.latency["latency_p99_ms"],
        CHAMPION_ALIAS,
        decision.summary,
    )
    apply(decision, inputs.model_name, inputs.version)
    return decision


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("evaluate"):
        run(args)


if __name__ == "__main__":
    main()
