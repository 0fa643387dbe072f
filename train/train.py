"""Train step: fine-tune the backbone on a preprocess run's splits, export ONNX, check parity, log and
register the model.

Artifacts: the ONNX model (mlflow onnx flavor, with signature, input example, tokenizer.json and
serving_config.json as extra files), a confusion matrix, misclassified validation samples, a classification
report. The new registered version gets the alias `challenger`; only the evaluate step's gate moves
`champion`.
"""

import argparse
import json
import logging
import os
import random
import tempfile
from pathlib import Path

import mlflow
import mlflow.onnx
import numpy as np
import onnx
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from transformers import AutoConfig, AutoTokenizer

from sentclf.backbone import BUNDLED_BACKBONE, resolve_backbone
from sentclf.cli import parse_bool
from sentclf.data import read_split
from sentclf.hub import offline_reason
from sentclf.plots import log_confusion_matrix
from sentclf.schema import LABEL_NAMES
from sentclf.tracking import StepInputError, record_inputs, resolve_step_run, step_run

from calibration import best_margin_shift, fold_shift_into_head, output_layer
from export import INPUT_NAMES, OUTPUT_NAME, check_parity, export_onnx, parity_report
from modeling import POOLING_CHOICES, build_classifier
from reporting import classification_report, misclassified_table
from training import EncodedSplit, TrainConfig, collate, encode_split, predict, train
from variants import VARIANTS, build_variants, compare_variants

logger = logging.getLogger("train")

CHALLENGER_ALIAS = "challenger"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-run-id", default="", help="preprocess run (default: the newest successful one)"
    )
    for name, kind in [
        ("epochs", int),
        ("max-train-samples", int),
        ("batch-size", int),
        ("learning-rate", float),
        ("max-seq-length", int),
        ("seed", int),
        ("patience", int),
        ("warmup-ratio", float),
        ("weight-decay", float),
        ("layer-lr-decay", float),
        ("ema-decay", float),
    ]:
        parser.add_argument(f"--{name}", type=kind, required=True)
    parser.add_argument("--base-model", required=True, help="`bundled`, a local folder or a hub id")
    parser.add_argument("--serve-variant", required=True, help="fp32, optimized or int8: the model logged")
    parser.add_argument(
        "--pooling",
        required=True,
        help="`mean` (mean-pooled tokens), `mix` (mean over a learned mix of layers) or `cls` (HF's head)",
    )
    parser.add_argument(
        "--tune-threshold",
        type=parse_bool,
        required=True,
        help="shift the decision threshold to the validation-MCC optimum (folded into the head's bias)",
    )
    parser.add_argument("--registered-model-name", required=True)
    return parser.parse_args(argv)


def validate_args(args: argparse.Namespace) -> None:
    """Reject bad parameters before any heavy work, each with the fix."""
    checks = [
        (
            args.epochs >= 1,
            f"epochs must be >= 1 (a maximum; early stopping may end sooner), got {args.epochs}",
        ),
        (args.batch_size >= 1, f"batch_size must be >= 1, got {args.batch_size}"),
        (args.learning_rate > 0, f"learning_rate must be > 0, got {args.learning_rate}"),
        (8 <= args.max_seq_length <= 512, f"max_seq_length must be in [8, 512], got {args.max_seq_length}"),
        (
            args.max_train_samples == -1 or args.max_train_samples >= 1,
            f"max_train_samples must be -1 (all) or >= 1, got {args.max_train_samples}",
        ),
        (args.patience >= 1, f"patience must be >= 1, got {args.patience}"),
        (0 <= args.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {args.warmup_ratio}"),
        (args.weight_decay >= 0, f"weight_decay must be >= 0, got {args.weight_decay}"),
        (
            0 < args.layer_lr_decay <= 1,
            f"layer_lr_decay must be in (0, 1] (1 = same rate for every layer), got {args.layer_lr_decay}",
        ),
        (0 <= args.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {args.ema_decay}"),
        (bool(args.registered_model_name.strip()), "registered_model_name must not be empty"),
        (
            args.serve_variant in VARIANTS,
            f"serve_variant must be one of {', '.join(VARIANTS)}, got {args.serve_variant!r}",
        ),
        (
            args.pooling in POOLING_CHOICES,
            f"pooling must be one of {', '.join(POOLING_CHOICES)}, got {args.pooling!r}",
        ),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise StepInputError("bad parameter(s): " + "; ".join(problems))


def load_backbone_config(base_model: str) -> tuple[str, AutoConfig]:
    """Load the backbone's config first: an unknown name fails in a second, not after the data work."""
    source = resolve_backbone(base_model)
    if base_model != BUNDLED_BACKBONE and not Path(source).is_dir():
        reason = offline_reason(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        if reason:  # fail now, not after transformers' retries (about 20 s)
            raise StepInputError(
                f"base_model {base_model!r} cannot be loaded: it is not a local folder, so it is read as a "
                f"hub id, but the hub is {reason}. Use `bundled` (offline) or a local Hugging Face folder."
            )
    try:
        return source, AutoConfig.from_pretrained(source, num_labels=len(LABEL_NAMES))
    except (OSError, ValueError) as error:
        raise StepInputError(
            f"base_model {base_model!r} cannot be loaded ({str(error).splitlines()[0]}). Use `bundled` "
            "(offline), a local Hugging Face folder, or a hub id where a hub is reachable."
        ) from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def onnx_signature() -> ModelSignature:
    inputs = Schema([TensorSpec(np.dtype(np.int64), (-1, -1), name) for name in INPUT_NAMES])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, len(LABEL_NAMES)), OUTPUT_NAME)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_evaluation_artifacts(split: EncodedSplit, logits: np.ndarray) -> None:
    predictions = logits.argmax(axis=1)
    log_confusion_matrix(
        split.labels,
        predictions,
        "Validation confusion matrix (best epoch)",
        "evaluation/confusion_matrix.png",
    )
    mlflow.log_table(misclassified_table(split.texts, split.labels, logits), "evaluation/misclassified.json")
    mlflow.log_text(classification_report(split.labels, predictions), "evaluation/classification_report.txt")


def log_and_register(onnx_path: Path, tokenizer_dir: Path, sample: dict, args: argparse.Namespace) -> str:
    """Log the ONNX model with its serving files, register a version, alias it `challenger`."""
    serving_config = tokenizer_dir / "serving_config.json"
    serving_config.write_text(
        json.dumps(
            {
                "model_name": "cola",
                "max_seq_length": args.max_seq_length,
                "labels": list(LABEL_NAMES),
                "input_names": INPUT_NAMES,
                "output_name": OUTPUT_NAME,
            },
            indent=2,
        )
    )
    info = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name="model",
        signature=onnx_signature(),
        input_example={name: sample[name][:2].numpy() for name in INPUT_NAMES},
        registered_model_name=args.registered_model_name,
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
        extra_files=[str(tokenizer_dir / "tokenizer.json"), str(serving_config)],
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(args.registered_model_name, CHALLENGER_ALIAS, version)
    client.set_model_version_tag(
        args.registered_model_name, version, "train_run_id", mlflow.active_run().info.run_id
    )
    mlflow.set_tag("registered_model_version", version)
    logger.info("registered %s version %s (alias %s)", args.registered_model_name, version, CHALLENGER_ALIAS)
    return version


def tune_threshold(
    model: torch.nn.Module, split: EncodedSplit, logits: np.ndarray, batch_size: int, pad_id: int
) -> np.ndarray:
    """Fold the validation-MCC-optimal margin shift into the head; the adjusted model's logits."""
    shift, mcc_before, mcc_after = best_margin_shift(split.labels, logits)
    fold_shift_into_head(output_layer(model), shift)
    mlflow.log_metrics(
        {"decision_shift": shift, "val_mcc_before_shift": mcc_before, "val_mcc_after_shift": mcc_after}
    )
    logger.info(
        "decision threshold: margin shift %+.3f moves val MCC %.4f -> %.4f", shift, mcc_before, mcc_after
    )
    shifted, _ = predict(model, split, batch_size, pad_id)
    return shifted


def run(args: argparse.Namespace) -> None:
    validate_args(args)
    source, config = load_backbone_config(args.base_model)
    data_run = resolve_step_run(args.data_run_id, "preprocess")
    record_inputs(data_run_id=data_run.info.run_id)
    mlflow.log_param("torch_threads", torch.get_num_threads())
    train_frame = read_split(data_run.info.run_id, "train")
    validation_frame = read_split(data_run.info.run_id, "validation")
    if args.max_train_samples != -1 and args.max_train_samples < len(train_frame):
        train_frame = train_frame.sample(n=args.max_train_samples, random_state=args.seed).reset_index(
            drop=True
        )
    if args.batch_size > len(train_frame):
        raise StepInputError(
            f"batch_size {args.batch_size} is larger than the {len(train_frame)} training rows: lower "
            "batch_size or raise max_train_samples"
        )

    seed_everything(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = build_classifier(source, config, args.pooling)
    if args.tune_threshold:
        try:  # before training: a head the threshold cannot be folded into must not cost a whole run
            output_layer(model)
        except ValueError as error:
            raise StepInputError(str(error)) from None
    train_split = encode_split(train_frame, tokenizer, args.max_seq_length)
    validation_split = encode_split(validation_frame, tokenizer, args.max_seq_length)
    logger.info(
        "training on %d rows, validating on %d, %d torch threads",
        len(train_split),
        len(validation_split),
        torch.get_num_threads(),
    )

    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        patience=args.patience,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        layer_lr_decay=args.layer_lr_decay,
        ema_decay=args.ema_decay,
        tune_threshold=args.tune_threshold,
    )
    summary = train(
        model,
        train_split,
        validation_split,
        train_config,
        tokenizer.pad_token_id,
        lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
    )
    mlflow.log_metrics(summary)

    logits, _ = predict(model, validation_split, args.batch_size * 2, tokenizer.pad_token_id)
    if args.tune_threshold:
        logits = tune_threshold(model, validation_split, logits, args.batch_size * 2, tokenizer.pad_token_id)
    log_evaluation_artifacts(validation_split, logits)

    with tempfile.TemporaryDirectory(prefix="sentclf-train-") as tmp:
        tmp_dir = Path(tmp)
        sample = collate(validation_split, np.arange(min(4, len(validation_split))), tokenizer.pad_token_id)
        onnx_path = export_onnx(model, sample, tmp_dir / "model.onnx")
        parity = parity_report(model, onnx_path, validation_split, tokenizer.pad_token_id)
        mlflow.log_metrics(parity)
        check_parity(parity)
        variants = build_variants(onnx_path, config, tmp_dir)
        mlflow.log_metrics(compare_variants(variants, validation_split, logits, tokenizer.pad_token_id))
        mlflow.set_tag("served_variant", args.serve_variant)
        for name, path in variants.items():
            if name != args.serve_variant:  # the served one is the logged model itself
                mlflow.log_artifact(str(path), "onnx_variants")
        tokenizer_dir = tmp_dir / "tokenizer"
        tokenizer.save_pretrained(str(tokenizer_dir))
        log_and_register(variants[args.serve_variant], tokenizer_dir, sample, args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TORCH_NUM_THREADS", os.cpu_count() or 1)))
    with step_run("train"):
        run(args)


if __name__ == "__main__":
    main()
