"""Fine-tuning recipes compared on the same splits: which knobs move CoLA MCC with the bundled backbone.

Each recipe is trained by the train step's own loop (train/training.py) on the splits the preprocess step
makes with the root MLproject's defaults (shipped CoLA; the test split is CoLA's in-domain dev set).
Per epoch it prints validation and test MCC; per recipe, the test MCC at the epoch early stopping keeps
(the one chosen on validation, as the train step does) and the training speed. The "ceiling" is the test
MCC at the best threshold for test itself: a diagnosis (it peeks at test labels), which tells a weak model
from a badly placed threshold.

Usage: python bench/recipe_sweep.py --recipe lr=1e-4,pooling=mean --recipe lr=2e-4,layer_lr_decay=0.8 ...
Keys: lr, epochs, batch_size, pooling, warmup_ratio, weight_decay, layer_lr_decay, ema_decay, patience,
seed, tune_threshold.
Missing keys take the train step's MLproject defaults. Recipes run one after another in this process.
"""

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoConfig, AutoTokenizer

from sentclf.backbone import resolve_backbone
from sentclf.cli import parse_bool
from sentclf.schema import COLA_LABEL_NAMES

import benchlib
from benchlib import REPO_ROOT

# The train step's own loop and the preprocess step's own data and split, as the steps run them.
benchlib.use_steps("train", "preprocess")
import calibration  # noqa: E402
import modeling  # noqa: E402
import sources  # noqa: E402
import splitting  # noqa: E402
import training  # noqa: E402

RECIPE_KEYS = {
    "lr": ("learning_rate", float),
    "epochs": ("epochs", int),
    "batch_size": ("batch_size", int),
    "pooling": ("pooling", str),
    "warmup_ratio": ("warmup_ratio", float),
    "weight_decay": ("weight_decay", float),
    "layer_lr_decay": ("layer_lr_decay", float),
    "ema_decay": ("ema_decay", float),
    "patience": ("patience", int),
    "seed": ("seed", int),
    "tune_threshold": ("tune_threshold", parse_bool),
}


def mlproject_defaults(path: Path) -> dict:
    parameters = yaml.safe_load(path.read_text())["entry_points"]["main"]["parameters"]
    return {name: spec["default"] for name, spec in parameters.items()}


def parse_recipe(text: str, defaults: dict) -> dict:
    recipe = dict(defaults)
    # YAML reads a default such as `2e-4` (no dot) as a string: give every known key its type.
    for name, kind in RECIPE_KEYS.values():
        recipe[name] = kind(str(recipe[name]))
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in RECIPE_KEYS:
            raise SystemExit(f"unknown recipe key {key!r}: use one of {', '.join(RECIPE_KEYS)}")
        name, kind = RECIPE_KEYS[key]
        recipe[name] = kind(value)
    return recipe


def default_splits(root_defaults: dict):
    """train / validation / test exactly as the preprocess step splits shipped CoLA by default."""
    source = sources.load_cola()
    seed = root_defaults["seed"]
    train_frame, validation_frame = splitting.stratified_split(
        source.frames["train"], root_defaults["val_fraction"], seed
    )
    return train_frame, validation_frame, source.frames["test"]


def mcc_of(labels: np.ndarray, logits: np.ndarray, shift: float = 0.0) -> float:
    margins = (logits[:, 1] - logits[:, 0]).astype(np.float64)
    return float(calibration.mcc_at_shifts(labels, margins, np.array([shift]))[0])


def run_recipe(recipe: dict, frames, source: str) -> dict:
    train_frame, validation_frame, test_frame = frames
    torch.manual_seed(recipe["seed"])
    np.random.seed(recipe["seed"])
    config = AutoConfig.from_pretrained(source, num_labels=len(COLA_LABEL_NAMES))
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = modeling.build_classifier(source, config, recipe["pooling"])
    splits = [training.encode_split(f, tokenizer, recipe["max_seq_length"]) for f in frames]
    pad_id = tokenizer.pad_token_id
    test_by_epoch: dict[int, tuple[float, float, float]] = {}

    def log_epoch(epoch: int, metrics: dict) -> None:
        validation_logits, _ = training.predict(model, splits[1], 64, pad_id)
        test_logits, _ = training.predict(model, splits[2], 64, pad_id)
        shift, _, validation_mcc_shifted = calibration.best_margin_shift(splits[1].labels, validation_logits)
        test_by_epoch[epoch] = (
            mcc_of(splits[2].labels, test_logits),
            mcc_of(splits[2].labels, test_logits, shift),
            # The best any threshold could do on test: a ceiling for diagnosis (it peeks at test labels,
            # so no shipped model can use it). It separates "wrong threshold" from "weak model".
            calibration.best_margin_shift(splits[2].labels, test_logits)[2],
        )
        print(
            f"  epoch {epoch}: train_loss {metrics['train_loss']:.4f} val_loss {metrics['val_loss']:.4f} "
            f"val_mcc {metrics['val_mcc']:.4f} test_mcc {test_by_epoch[epoch][0]:.4f} | shift {shift:+.2f}: "
            f"val_mcc {validation_mcc_shifted:.4f} "
            f"test_mcc {test_by_epoch[epoch][1]:.4f} | test ceiling {test_by_epoch[epoch][2]:.4f} "
            f"({metrics['train_samples_per_second']:.0f} samples/s)",
            flush=True,
        )

    train_config = training.TrainConfig(
        **{k: recipe[k] for k in ("epochs", "batch_size", "learning_rate", "max_seq_length", "seed")},
        patience=recipe["patience"],
        warmup_ratio=recipe["warmup_ratio"],
        weight_decay=recipe["weight_decay"],
        layer_lr_decay=recipe["layer_lr_decay"],
        ema_decay=recipe["ema_decay"],
        tune_threshold=recipe["tune_threshold"],
    )
    started = time.perf_counter()
    summary = training.train(model, splits[0], splits[1], train_config, pad_id, log_epoch)
    return {
        **summary,
        "test_mcc": test_by_epoch[summary["best_epoch"]][0],
        "test_mcc_shifted": test_by_epoch[summary["best_epoch"]][1],
        "test_mcc_ceiling": test_by_epoch[summary["best_epoch"]][2],
        "minutes": (time.perf_counter() - started) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", action="append", default=[], help="comma-separated key=value overrides")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root_defaults = mlproject_defaults(REPO_ROOT / "MLproject")
    train_defaults = mlproject_defaults(REPO_ROOT / "train" / "MLproject")
    frames = default_splits(root_defaults)
    source = resolve_backbone(train_defaults["base_model"])
    print(f"splits: train {len(frames[0])}, validation {len(frames[1])}, test {len(frames[2])}", flush=True)
    results = []
    for text in args.recipe or [""]:
        recipe = parse_recipe(text, train_defaults)
        print(f"recipe {text or '(defaults)'}", flush=True)
        result = run_recipe(recipe, frames, source)
        results.append((text or "(defaults)", result))
        print(
            f"  -> best epoch {result['best_epoch']}/{result['epochs_run']} "
            f"val_mcc {result['best_val_mcc']:.4f} test_mcc {result['test_mcc']:.4f} "
            f"(shifted {result['test_mcc_shifted']:.4f}, ceiling {result['test_mcc_ceiling']:.4f}) "
            f"{result['mean_train_samples_per_second']:.0f} samples/s "
            f"{result['minutes']:.1f} min",
            flush=True,
        )
    print(
        "\nrecipe | epoch kept | val MCC (selection) | test MCC, tuned | test MCC, argmax "
        "| test MCC ceiling (any threshold) | samples/s | min"
    )
    for text, result in results:
        print(
            f"{text} | {result['best_epoch']}/{result['epochs_run']} | {result['best_val_mcc']:.3f} | "
            f"{result['test_mcc_shifted']:.3f} | {result['test_mcc']:.3f} | "
            f"{result['test_mcc_ceiling']:.3f} | "
            f"{result['mean_train_samples_per_second']:.0f} | {result['minutes']:.1f}"
        )


if __name__ == "__main__":
    main()
