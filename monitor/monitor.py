"""Served traffic against the served model's data: `mlflow run monitor -P traffic=<capture folder>`.

Reads the window (`since`) of the capture folder, finds the model version (default the champion), the
preprocess run it was trained on and its ONNX files; compares the traffic's sentence features with the
training split's and its predictions with the version's own on its test split (recomputed here with ONNX
Runtime); logs each feature's PSI and KS, the verdict tags `drift` (true/false) and `drift.features`,
monitor/verdict.json and monitor/report.html. With `feedback` (a folder of labels that came back), each
version that answered in the window is judged on live traffic too (monitor/live_traffic.py).
"""

import argparse
import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from tokenizers import Tokenizer

from sentclf.contract import DEFAULT_CHAMPION_URI, VERDICT_ARTIFACT, ModelRef, MonitorVerdict
from sentclf.data import model_inputs, read_split
from sentclf.tracking import StepInputError, record_inputs, step_run
from sentclf.traffic import parse_since, read_capture, served_records, text_features

from behaviour import test_probabilities
from compare import compare, verdict
from lineage import resolve_model, traffic_folder
from live_traffic import judge, log_evidence
from monitor_report import live_section, render

logger = logging.getLogger("monitor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traffic", required=True)
    parser.add_argument("--model", default=DEFAULT_CHAMPION_URI)
    parser.add_argument("--since", default="24h")
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--min-records", type=int, default=50)
    parser.add_argument("--feedback", default="", help="a folder of labels that came back; empty: none")
    return parser.parse_args(argv)


def load_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def text_columns(texts: list[str], tokenizer: Tokenizer) -> dict[str, np.ndarray]:
    counts = np.array(text_features(tokenizer, texts), dtype=float).reshape(-1, 3)
    return {
        "chars": np.array([len(t) for t in texts], dtype=float),
        "tokens": counts[:, 0],
        "oov_share": counts[:, 2] / np.maximum(counts[:, 1], 1),
    }


def traffic_columns(window: pd.DataFrame, tokenizer: Tokenizer) -> dict[str, np.ndarray]:
    """The features of the captured records: as the server counted them, or from the text if it did not."""
    columns = {"chars": window["chars"].to_numpy(dtype=float)}
    if "tokens" in window and window["tokens"].notna().all():
        columns["tokens"] = window["tokens"].to_numpy(dtype=float)
        columns["oov_share"] = window["oov_words"].to_numpy(dtype=float) / np.maximum(
            window["words"].to_numpy(dtype=float), 1
        )
    elif "text" in window and window["text"].notna().all():
        computed = text_columns(window["text"].tolist(), tokenizer)
        columns |= {"tokens": computed["tokens"], "oov_share": computed["oov_share"]}
    probabilities = window["probabilities"].tolist()
    columns["confidence"] = np.array([max(p) for p in probabilities], dtype=float)
    return columns


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("monitor"):
        since = parse_since_or_fail(args.since)
        folder = traffic_folder(args.traffic)
        window = read_capture(folder, since)
        # Drift is about what callers sent: each sentence once, as its served record has it; a challenger's
        # shadow answers to the same sentences are judged on live traffic (judge), never counted twice here.
        traffic = served_records(window)
        if len(traffic) < args.min_records:
            raise StepInputError(
                f"{len(traffic)} served records in {args.traffic} within since={args.since} (shadow answers "
                f"not counted), fewer than min_records={args.min_records}: nothing to judge (is the "
                "server's CAPTURE_DIR this folder?)"
            )
        model = resolve_model(args.model)
        with model.tmp:
            record_inputs(model=ModelRef(model.name, model.version).uri, data_run_id=model.data_run_id)
            served = sorted({f"{m} v{v}" for m, v in zip(traffic["model"], traffic["version"], strict=True)})
            logger.info(
                "%d served records (%s; %d shadow answers left out) against %s v%s",
                len(traffic),
                ", ".join(served),
                len(window) - len(traffic),
                model.name,
                model.version,
            )
            tokenizer = load_tokenizer(model.model_dir / "tokenizer.json")
            train = read_split(model.data_run_id, "train")
            test = read_split(model.data_run_id, "test")
            # A sentence-pair task: pairs joined as the capture joins them; the test split scored as pairs.
            reference = text_columns(model_inputs(train)[1], tokenizer)
            test_probs = test_probabilities(model.model_dir, model_inputs(test)[0])
            reference["confidence"] = test_probs.max(axis=1)
            current = traffic_columns(traffic, tokenizer)
            scores = compare(
                reference,
                current,
                model.labels,
                test_probs.argmax(axis=1),
                traffic["label"].to_numpy(dtype=np.int64),
            )
            result = verdict(scores, args.threshold)
            live = judge(args.feedback, folder, window, since is not None, model) if args.feedback else None
        log_result(scores, result, traffic, model, args, live, shadow=len(window) - len(traffic))


def parse_since_or_fail(since: str):
    try:
        return parse_since(since)
    except ValueError as error:
        raise StepInputError(str(error)) from None


def log_result(
    scores,
    result: MonitorVerdict,
    window: pd.DataFrame,
    model,
    args: argparse.Namespace,
    live=None,
    shadow: int = 0,
) -> None:
    """`window`: the served records the drift was computed on; `shadow`: the shadow answers left out."""
    metrics = {"traffic_records": float(len(window)), "traffic_shadow_records": float(shadow)}
    for score in scores:
        metrics[f"{score.name}_psi"] = score.psi
        if score.ks is not None:
            metrics[f"{score.name}_ks"] = score.ks
        for key, value in score.extra.items():
            metrics[f"{score.name}_{key}"] = value
    mlflow.log_metrics(metrics)
    mlflow.set_tags(result.tags() | {"model_version": model.version})
    context = {
        "model": f"{model.name} version {model.version} (trained on preprocess run {model.data_run_id})",
        "traffic": f"{args.traffic}: {len(window)} records, {window['time'].min()} to {window['time'].max()}",
        "window": args.since,
    }
    if live is not None:
        log_evidence(live)
        result = replace(result, live=live.as_dict())
    summary = result.as_dict() | {"records": len(window), "model": model.name, "version": model.version}
    summary["scores"] = {s.name: {"psi": s.psi, "ks": s.ks} for s in scores}
    with tempfile.TemporaryDirectory(prefix="sentclf-monitor-report-") as tmp:
        (Path(tmp) / Path(VERDICT_ARTIFACT).name).write_text(json.dumps(summary, indent=2))
        extra = live_section(live, args.feedback) if live is not None else ""
        (Path(tmp) / "report.html").write_text(render(scores, result, context, extra))
        mlflow.log_artifacts(tmp, str(Path(VERDICT_ARTIFACT).parent))
    if result.drift:
        logger.warning(
            "drift: %s over threshold %s (%s)",
            ", ".join(result.features),
            args.threshold,
            ", ".join(
                f"{s.name} PSI {s.psi:.3f}" + ("" if s.ks is None else f" KS {s.ks:.3f}") for s in scores
            ),
        )
    else:
        logger.info(
            "no drift (threshold %s): %s",
            args.threshold,
            ", ".join(f"{s.name} PSI {s.psi:.3f}" for s in scores),
        )
    print(result.line(), flush=True)  # the verdict as JSON on its known line (ops.retrain_when reads it)


if __name__ == "__main__":
    main()
