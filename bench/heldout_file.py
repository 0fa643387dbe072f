"""Registered versions scored on a labelled file the pipeline never saw: CoLA's out-of-domain dev set
(sentences from other books than the training ones, preprocess/data/cola-out-of-domain/), or a file of
your own. Accuracy and MCC with 95% bootstrap intervals for each version, and each later version against
the first, paired on the same rows. The versions are scored with their registered files and the server's
scorer (sentclf.text_model: the model a version's image serves, int8 where it serves int8), in process.

Usage (dev venv, MLFLOW_TRACKING_URI at the store):
    python bench/heldout_file.py preprocess/data/cola-out-of-domain/out_of_domain_dev.tsv \
        --model-name cola-classifier --versions 2 5
A headerless CoLA .tsv is read as CoLA's four columns; a .csv or .tsv with a header needs --text-column and
--label-column. Labels are the version's class names or class numbers.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from sentclf.bootstrap import (
    accuracy_per_resample,
    interval,
    mcc_interval,
    paired_bootstrap,
    resample_indices,
)
from sentclf.text_model import TextClassifier

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per version drowns the table
COLA_COLUMNS = ["source", "label", "annotation", "sentence"]
RESAMPLES = 2000


def read_file(path: Path, text_column: str | None, label_column: str | None) -> tuple[list[str], list[str]]:
    """(texts, labels as text) of a headerless CoLA .tsv, or of a .csv/.tsv with the named columns."""
    if path.suffix == ".tsv" and text_column is None:
        frame = pd.read_csv(path, sep="\t", header=None, names=COLA_COLUMNS, dtype=str, quoting=3)
        text_column, label_column = "sentence", "label"
    else:
        frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str)
        missing = [c for c in (text_column, label_column) if c not in frame.columns]
        if missing:
            sys.exit(
                f"{path}: no column(s) {missing} (it has {list(frame.columns)}): name them with "
                "--text-column and --label-column"
            )
    return frame[text_column].tolist(), frame[label_column].str.strip().tolist()


def class_numbers(labels: list[str], names: list[str]) -> np.ndarray:
    """The file's labels as the version's class numbers (a class name, or the number itself)."""
    index = {name: i for i, name in enumerate(names)} | {str(i): i for i in range(len(names))}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        sys.exit(f"labels {unknown[:5]} are neither class names {names} nor class numbers of this model")
    return np.array([index[label] for label in labels], dtype=np.int64)


def predictions(model_name: str, version: str, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    with tempfile.TemporaryDirectory(prefix="bench-heldout-") as tmp:
        folder = mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}", dst_path=tmp)
        scorer = TextClassifier.from_dir(folder)
        return np.asarray(scorer.score(texts).labels, dtype=np.int64), list(scorer.labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file", type=Path)
    parser.add_argument("--model-name", default="cola-classifier")
    parser.add_argument("--versions", nargs="+", required=True, help="numbers; later ones against the first")
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    texts, labels = read_file(args.file, args.text_column, args.label_column)
    draws = resample_indices(len(texts), RESAMPLES, args.seed)
    print(f"{args.file.name}: {len(texts)} rows; {RESAMPLES} bootstrap resamples, seed {args.seed}\n")
    print("| version | MCC [95%] | accuracy [95%] | paired against the first: ΔMCC, Δaccuracy |")
    print("| --- | --- | --- | --- |")
    first = None
    for version in args.versions:
        predicted, names = predictions(args.model_name, version, texts)
        truth = class_numbers(labels, names)
        classes = len(names)
        correct = float((truth == predicted).mean())
        accuracy = interval(correct, accuracy_per_resample(truth, predicted, draws))
        if first is None:
            first, against = predicted, "–"
        else:
            paired = paired_bootstrap(truth, predicted, first, draws, classes)
            against = f"{paired.delta_mcc}, {paired.delta_accuracy}"
        print(f"| {version} | {mcc_interval(truth, predicted, draws, classes)} | {accuracy} | {against} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
