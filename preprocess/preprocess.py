"""Preprocess step: load the data set, validate it, split it, profile it, log the splits.

Artifacts: data/{train,validation,test}.parquet (columns sentence, label), schema.json,
validation_report.json, profile.json and a length histogram. A blocking validation problem fails the
run before anything under data/ is logged, so no later step can take it for valid data.
"""

import argparse
import json
import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from sentclf.schema import DATA_ARTIFACT_DIR, LABEL_COLUMN, LABEL_NAMES, SCHEMA_ARTIFACT, TEXT_COLUMN
from sentclf.tracking import step_run

from profiling import log_profile
from sources import load_source
from splitting import stratified_split
from validation import ValidationReport, validate_frame

logger = logging.getLogger("preprocess")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="`cola` (the shipped files) or a local path")
    parser.add_argument("--val-fraction", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    if not 0.0 < args.val_fraction < 0.5:
        parser.error(f"--val-fraction must be in (0, 0.5), got {args.val_fraction}")
    return args


def write_splits(splits: dict[str, pd.DataFrame], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame[[TEXT_COLUMN, LABEL_COLUMN]].to_parquet(out_dir / f"{name}.parquet", index=False)


def split_metrics(splits: dict[str, pd.DataFrame]) -> dict[str, float]:
    metrics = {}
    for name, frame in splits.items():
        metrics[f"{name}_rows"] = len(frame)
        for index, label in enumerate(LABEL_NAMES):
            metrics[f"{name}_share_{label}"] = float((frame[LABEL_COLUMN] == index).mean())
    return metrics


def run(args: argparse.Namespace) -> None:
    source = load_source(args.dataset)
    report = ValidationReport()
    frames = {
        split: validate_frame(frame, split, source.origin[split], report)
        for split, frame in source.frames.items()
    }
    splits: dict[str, pd.DataFrame] = {}
    if not report.errors:
        train, validation = stratified_split(frames["train"], args.val_fraction, args.seed)
        splits = {"train": train, "validation": validation, "test": frames["test"]}
        report.check_cross_split_overlap(splits)

    with tempfile.TemporaryDirectory(prefix="sentclf-preprocess-") as tmp:
        tmp_dir = Path(tmp)
        report_path = tmp_dir / "validation_report.json"
        report_path.write_text(json.dumps(report.as_dict(), indent=2))
        mlflow.log_artifact(str(report_path))
        mlflow.log_metrics(report.metrics())
        report.raise_if_blocking()

        mlflow.log_params({"source": source.description})
        mlflow.log_metrics(split_metrics(splits))
        log_profile(splits, tmp_dir)
        (tmp_dir / SCHEMA_ARTIFACT).write_text(
            json.dumps(
                {
                    "columns": {TEXT_COLUMN: "string", LABEL_COLUMN: "int64"},
                    "labels": {str(i): name for i, name in enumerate(LABEL_NAMES)},
                    "splits": list(splits),
                },
                indent=2,
            )
        )
        mlflow.log_artifact(str(tmp_dir / SCHEMA_ARTIFACT))
        # Last, so that data/ exists only for a run whose data passed every check.
        write_splits(splits, tmp_dir / DATA_ARTIFACT_DIR)
        mlflow.log_artifacts(str(tmp_dir / DATA_ARTIFACT_DIR), DATA_ARTIFACT_DIR)
    logger.info("logged splits: %s", {name: len(frame) for name, frame in splits.items()})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("preprocess"):
        run(args)


if __name__ == "__main__":
    main()
