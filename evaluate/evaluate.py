"""Evaluate step: measure the server image on the held-out test split over gRPC and gate promotion.

Starts the image on the host network, waits for gRPC health SERVING, sends the test split with the
standard KServe v2 client (tritonclient), logs test metrics, latency and throughput, a confusion matrix
and a report, then applies the `champion` gate. The container is removed on every path.
"""

import argparse
import json
import logging

import mlflow
import numpy as np

from sentclf.containers import running_server
from sentclf.data import read_split
from sentclf.metrics import classification_metrics
from sentclf.plots import log_confusion_matrix
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN
from sentclf.tracking import StepInputError, resolve_step_run, step_run

from gate import apply_gate
from load import measure_latency, measure_throughput, predict_all

logger = logging.getLogger("evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server-image", required=True)
    parser.add_argument(
        "--data-run-id", default="", help="preprocess run (default: the newest successful one)"
    )
    parser.add_argument("--registered-model-name", required=True)
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--serving-model-name", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--throughput-requests", type=int, required=True)
    parser.add_argument("--gate-metric", required=True)
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.throughput_requests < 1:
        parser.error("concurrency and throughput_requests must be >= 1")
    return args


def run(args: argparse.Namespace) -> None:
    data_run = resolve_step_run(args.data_run_id, "preprocess")
    test = read_split(data_run.info.run_id, "test")
    texts, labels = test[TEXT_COLUMN].tolist(), test[LABEL_COLUMN].to_numpy()
    mlflow.log_params({"data_run_id": data_run.info.run_id, "test_rows": len(test)})

    with running_server(args.server_image, name_prefix="sentclf-evaluate") as (_, port, seconds_to_serving):
        predictions, probabilities = predict_all(port, args.serving_model_name, texts, args.model_version)
        latency = measure_latency(port, args.serving_model_name, texts, args.model_version)
        throughput = measure_throughput(
            port,
            args.serving_model_name,
            texts,
            args.model_version,
            args.concurrency,
            args.throughput_requests,
        )

    metrics = {f"test_{key}": value for key, value in classification_metrics(labels, predictions).items()}
    mlflow.log_metrics({**metrics, **latency, **throughput, "server_seconds_to_serving": seconds_to_serving})
    log_confusion_matrix(
        labels, predictions, "Test confusion matrix (served model)", "evaluation/test_confusion_matrix.png"
    )
    mlflow.log_text(
        json.dumps(
            {
                "metrics": metrics,
                "latency": latency,
                "throughput": throughput,
                "mean_max_probability": float(np.mean(probabilities.max(axis=1))),
            },
            indent=2,
        ),
        "evaluation/report.json",
    )
    logger.info(
        "test accuracy %.4f MCC %.4f; p50 %.2f ms p99 %.2f ms; %.0f req/s at concurrency %d",
        metrics["test_accuracy"],
        metrics["test_mcc"],
        latency["latency_p50_ms"],
        latency["latency_p99_ms"],
        throughput["throughput_rps"],
        args.concurrency,
    )

    if args.gate_metric not in metrics:
        raise StepInputError(f"gate_metric {args.gate_metric!r} is not one of {sorted(metrics)}")
    promoted = apply_gate(
        args.registered_model_name, args.model_version, args.gate_metric, metrics[args.gate_metric]
    )
    mlflow.set_tag("promoted_to_champion", str(promoted).lower())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("evaluate"):
        run(args)


if __name__ == "__main__":
    main()
