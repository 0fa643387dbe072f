"""Micro-F1 of a small multi-label run on the example tickets (tickets.csv as `make example-data` writes
it, examples/multilabel/generate.py, here into a temporary folder):
`python bench/multilabel_f1.py [--epochs 3] [--max-seq-length 64]`.

Runs the preprocess step (label_mode=multi) and the train step in this process against a throw-away
sqlite tracking store (no Docker, no server), then scores the test split with the registered version's
text-level scorer at its shipped per-label thresholds. Printed: the test micro-F1, macro-F1 and subset
accuracy with 95% bootstrap intervals (2000 resamples), the thresholds, the seconds, and the CPU model.
The served model answers the same probabilities (tests/server/test_one_scorer.py), so this is the figure
the evaluate step would report, less its latency measurements.
"""

import argparse
import shlex
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import yaml

from sentclf.bootstrap import interval, resample_indices
from sentclf.data import read_split
from sentclf.multilabel_metrics import resampled_summary, summary
from sentclf.text_model import TextClassifier

import benchlib

benchlib.use_steps("preprocess", "train")
import preprocess  # noqa: E402
import train  # noqa: E402


def step_argv(step: str, entry: str = "main", **overrides: object) -> list[str]:
    """The step's MLproject command with its defaults and `overrides`, as its main's argv."""
    spec = yaml.safe_load((benchlib.REPO_ROOT / step / "MLproject").read_text())["entry_points"][entry]
    values = {name: p["default"] for name, p in spec["parameters"].items()} | overrides
    return shlex.split(spec["command"].format(**{k: shlex.quote(str(v)) for k, v in values.items()}))[2:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sentclf-bench-") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", f"{tmp}/artifacts"))
        dataset = benchlib.example_tickets(Path(tmp) / "tickets")
        began = time.perf_counter()
        preprocess.main(
            step_argv(
                "preprocess",
                dataset=dataset,
                text_column="text",
                label_column="labels",
                label_mode="multi",
                label_audit="false",
                registered_model_name="tickets",
                seed=args.seed,
            )
        )
        data_run = mlflow.search_runs(output_format="list")[0].info.run_id
        train.main(
            step_argv(
                "train",
                data_run_id=data_run,
                epochs=args.epochs,
                max_seq_length=args.max_seq_length,
                registered_model_name="tickets",
                seed=args.seed,
            )
        )
        seconds = time.perf_counter() - began
        model_dir = Path(mlflow.artifacts.download_artifacts("models:/tickets@challenger", dst_path=tmp))
        classifier = TextClassifier.from_dir(model_dir)
        test = read_split(data_run, "test")
        targets = np.zeros((len(test), len(classifier.labels)), dtype=bool)
        for row, indices in enumerate(test["label"]):
            targets[row, np.asarray(indices, dtype=int)] = True
        thresholds = np.asarray(classifier.config.label_thresholds())
        decisions = classifier.probabilities(test["sentence"].tolist()) >= thresholds
        draws = resample_indices(len(test), 2000, args.seed)
        values, samples = summary(targets, decisions), resampled_summary(targets, decisions, draws)
    for key in ("micro_f1", "macro_f1", "subset_accuracy"):
        print(f"test {key}: {interval(values[key], samples[key])} ({len(test)} texts)")
    print(f"thresholds: {dict(zip(classifier.labels, np.round(thresholds, 3).tolist(), strict=True))}")
    print(f"preprocess + train: {seconds:.0f} s (epochs {args.epochs}, max_seq_length {args.max_seq_length})")
    print(f"CPU: {benchlib.cpu_line()}")


if __name__ == "__main__":
    main()
