"""Few-shot (train/few_shot.py) against the ordinary fine-tune on the same few labelled rows, scored on the
same test rows: the figure on docs/benchmarks.md ("Few labels").

    python bench/few_shot_accuracy.py ~/sentclf-examples/trec-8/data \
        --text-column question --label-column answer_type

The folder is what examples/few_labels.py writes (data/train.csv: N rows per class; data/test.csv). The
fine-tune is the train step's own loop and model with the pipeline's defaults (5 epochs, batch 32, lr 2e-4,
layer decay 0.8, max_seq_length 64), every training row trained on and the last epoch kept (there is no
validation split worth selecting on); the few-shot model is the step's few-shot recipe as shipped.
Accuracy with a 95% Wilson interval, and the training seconds, for each.

A lever on the recipe, measured on the same rows: `--body-learning-rates 2e-5 5e-5 --no-fine-tune` trains
the few-shot recipe once per body learning rate (the first is the baseline) and prints each one's accuracy
and its paired difference from the first (bootstrap over the test rows); `--pair-iterations` lowers
SetFit's 20 pair iterations where a loaded machine cannot afford them (the figure says so).
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoConfig, AutoTokenizer

from sentclf.backbone import resolve_backbone
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN

import benchlib

benchlib.use_steps("train")
import few_shot  # noqa: E402
from modeling import build_classifier  # noqa: E402
from training import TrainConfig, encode_split, predict, train  # noqa: E402


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("--text-column", required=True)
    parser.add_argument("--label-column", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pair-iterations", type=int, default=few_shot.PAIR_ITERATIONS)
    parser.add_argument("--body-learning-rates", type=float, nargs="+", default=[few_shot.BODY_LEARNING_RATE])
    parser.add_argument("--no-fine-tune", action="store_true", help="the few-shot recipe(s) only")
    args = parser.parse_args()
    frames = {}
    for split in ("train", "test"):
        frame = pd.read_csv(args.data / f"{split}.csv", dtype=str, keep_default_na=False)
        frames[split] = frame.rename(columns={args.text_column: TEXT_COLUMN, args.label_column: LABEL_COLUMN})
    names = sorted(frames["train"][LABEL_COLUMN].unique())
    for frame in frames.values():
        frame[LABEL_COLUMN] = frame[LABEL_COLUMN].map({n: i for i, n in enumerate(names)})
    source = resolve_backbone("bundled")
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = AutoConfig.from_pretrained(source, num_labels=len(names))
    train_split, test_split = (encode_split(frames[s], tokenizer, 64) for s in ("train", "test"))
    pad = tokenizer.pad_token_id
    print(f"{len(train_split)} training rows ({len(names)} classes), {len(test_split)} test rows")

    print(benchlib.cpu_line())
    results = {}
    if not args.no_fine_tune:
        torch.manual_seed(args.seed)
        started = time.perf_counter()
        model = build_classifier(source, config, "mean")
        recipe = TrainConfig(5, 32, 2e-4, 64, args.seed, 99, 0.1, 0.01, layer_lr_decay=0.8)
        train(model, train_split, train_split, recipe, pad, lambda epoch, metrics: None)
        results["fine-tune"] = (model, time.perf_counter() - started)
    for rate in args.body_learning_rates:
        few_shot.BODY_LEARNING_RATE = rate
        started = time.perf_counter()
        model, summary = few_shot.train_one(
            source, config, train_split, 16, args.seed, pad, args.pair_iterations
        )
        name = f"few-shot (body lr {rate:g}, {summary['contrastive_pairs']} pairs)"
        results[name] = (model, time.perf_counter() - started)
    flags = {}
    for name, (model, seconds) in results.items():
        logits, _ = predict(model, test_split, 64, pad)
        flags[name] = logits.argmax(1) == test_split.labels
        correct = int(flags[name].sum())
        low, high = wilson(correct, len(test_split))
        print(
            f"{name}: accuracy {correct / len(test_split):.4f} [{low:.4f}, {high:.4f}] on {len(test_split)} "
            f"test rows, trained in {seconds:.0f} s"
        )
    few = [name for name in flags if name.startswith("few-shot")]
    resamples = np.random.default_rng(args.seed).integers(0, len(test_split), (2000, len(test_split)))
    for name in few[1:]:
        diff = flags[name].astype(float) - flags[few[0]].astype(float)
        low, high = np.quantile(diff[resamples].mean(axis=1), [0.025, 0.975])
        print(f"{name} - {few[0]}: {diff.mean():+.4f} [{low:+.4f}, {high:+.4f}] (paired bootstrap)")


if __name__ == "__main__":
    main()
