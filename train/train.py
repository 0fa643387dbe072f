"""Train step: fine-tune the backbone on a preprocess run's splits, export ONNX, check parity, log and
register the model.

The classes come from the preprocess run (its label set: 2..200 classes, names from the data): the head has
one logit per class, the model config carries id2label/label2id, the serving config and the registered
version carry the names in class order.

Artifacts: the model, a text-level pyfunc (train/pyfunc_model.py: the ONNX graph, tokenizer.json and
serving_config.json; sentences in, class, name and probabilities out), a confusion matrix (figure and
JSON), misclassified validation samples, a classification report. The new registered version gets the
alias `challenger`; only the evaluate step's gate moves `champion`.
"""

import argparse
import copy
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from transformers import AutoConfig, AutoTokenizer

from sentclf.backbone import BUNDLED_BACKBONE, resolve_backbone
from sentclf.cli import parse_bool
from sentclf.contract import (
    CHALLENGER_ALIAS,
    LABEL_NAMES_TAG,
    MODEL_VERSION_TAG,
    ONNX_VARIANTS_DIR,
    PRECISION_USED_TAG,
    SERVED_VARIANT_TAG,
    TEXT_PAIR_TAG,
    TRAIN_RUN_TAG,
    TRAINING_FEW_SHOT,
    TRAINING_FINE_TUNE,
    TRAINING_MODE_TAG,
    TRAINING_ROWS_TAG,
    TRAINING_UNLABELLED_ROWS_TAG,
    VALIDATION_HELD_OUT,
    VALIDATION_MODE_TAG,
)
from sentclf.data import (
    log_split_inputs,
    read_label_mode,
    read_label_set,
    read_split,
    read_text_pair_column,
)
from sentclf.hub import offline_reason
from sentclf.metrics import classification_metrics
from sentclf.plots import log_confusion_matrix
from sentclf.schema import LABEL_COLUMN, LabelSet
from sentclf.tracking import StepInputError, record_inputs, resolve_step_run, step_run
from sentclf_runtime.config import FILE_NAME, ServingConfig
from sentclf_runtime.multilabel import MULTI_LABEL
from sentclf_runtime.names import LEGACY_SERVED_NAME

import multilabel_head
from calibration import best_margin_shift, fold_shift_into_head, output_layer
from distill import NO_TEACHER, attach_teacher, check_distill_args
from export import INPUT_NAMES, OUTPUT_NAME, check_parity, export_onnx, parity_report
from few_shot import (
    DEFAULT_THRESHOLD,
    FEW_SHOT_CHOICES,
    MIN_ROWS_PER_CLASS,
    PAIR_ITERATIONS,
    fit_few_shot,
    use_few_shot,
)
from int8 import CANDIDATES, DEFAULT_MAX_MCC_LOSS, INT8, TrainingRows, decide, pick_on_validation, record
from modeling import POOLING_CHOICES, build_classifier
from pair_encoding import serving_config_for
from precision import PRECISION_CHOICES, resolve_precision
from pyfunc_model import log_text_model
from reporting import classification_report, misclassified_table
from training import EncodedSplit, TrainConfig, collate, encode_split, predict, train
from variants import VARIANTS, build_variants, compare_variants, onnx_logits

logger = logging.getLogger("train")

# The precision that ran (`bf16` or `fp32`): a tag (evaluate's model card reads it); the `precision` param
# is what was asked.
PRECISION_TAG = PRECISION_USED_TAG
# What decides a prediction beyond the argmax, as the run's tag DECISION_CALIBRATION_TAG records it.
DECISION_CALIBRATION_TAG = "decision_calibration"
MARGIN_SHIFT, NO_CALIBRATION = "margin_shift", "none"


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
        help="two classes: shift the decision threshold to the validation-MCC optimum (folded into the "
        "head's bias); more classes: no calibration (the argmax), whatever this says",
    )
    parser.add_argument("--registered-model-name", required=True)
    add_precision_argument(parser)
    parser.add_argument(
        "--int8-max-mcc-loss",
        type=float,
        default=DEFAULT_MAX_MCC_LOSS,
        help="serve_variant=int8: int8 is served only when the 95%% paired-bootstrap interval of its test "
        "MCC minus fp32's lies above minus this; otherwise fp32 is served (docs/int8.md)",
    )
    add_few_shot_arguments(parser)
    add_teacher_arguments(parser)
    return parser.parse_args(argv)


def add_few_shot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--few-shot",
        default="auto",
        help="`true`: contrastive few-label training (train/few_shot.py); `false`: the ordinary fine-tune; "
        "`auto`: few-shot when the rarest class has fewer than few_shot_threshold training rows (counted "
        "before the max_train_samples cap)",
    )
    parser.add_argument("--few-shot-threshold", type=int, default=DEFAULT_THRESHOLD)
    parser.add_argument(
        "--few-shot-iterations",
        type=int,
        default=PAIR_ITERATIONS,
        help="contrastive pairs per training row are 2 x this (SetFit's num_iterations; fewer: quicker)",
    )


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """Distillation (train/distill.py, docs/teacher.md); the defaults train without a teacher."""
    parser.add_argument(
        "--teacher",
        default=NO_TEACHER,
        help="`none`, `mpnet` (all-mpnet-base-v2, offline) or a local Hugging Face folder / hub id",
    )
    parser.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature T")
    parser.add_argument(
        "--distill-alpha", type=float, default=0.9, help="weight of the teacher's KL (1 - it: the labels')"
    )
    parser.add_argument("--teacher-epochs", type=int, default=3, help="the teacher's fine-tuning epochs")
    parser.add_argument("--teacher-learning-rate", type=float, default=3e-5)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        default="auto",
        help="training passes: `auto` (bf16 where the CPU has native bfloat16, else fp32), `bf16` or "
        "`fp32`; the exported model is fp32 either way",
    )


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
        (
            args.precision in PRECISION_CHOICES,
            f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {args.precision!r}",
        ),
        (
            0 <= args.int8_max_mcc_loss < 1,
            f"int8_max_mcc_loss must be in [0, 1) (an MCC loss), got {args.int8_max_mcc_loss}",
        ),
        (
            args.few_shot in FEW_SHOT_CHOICES,
            f"few_shot must be one of {', '.join(FEW_SHOT_CHOICES)}, got {args.few_shot!r}",
        ),
        (args.few_shot_threshold >= 1, f"few_shot_threshold must be >= 1, got {args.few_shot_threshold}"),
        (
            args.few_shot_iterations >= 1,
            f"few_shot_iterations must be >= 1, got {args.few_shot_iterations}",
        ),
    ]
    problems = [message for ok, message in checks if not ok] + check_distill_args(args)
    if problems:
        raise StepInputError("bad parameter(s): " + "; ".join(problems))


def load_backbone_config(base_model: str) -> tuple[str, AutoConfig]:
    """Load the backbone's config first: an unknown name fails in a second, not after the data work. The
    head is sized later, from the data's label set (`configure_head`)."""
    source = resolve_backbone(base_model)
    if base_model != BUNDLED_BACKBONE and not Path(source).is_dir():
        reason = offline_reason(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        if reason:  # fail now, not after transformers' retries (about 20 s)
            raise StepInputError(
                f"base_model {base_model!r} cannot be loaded: it is not a local folder, so it is read as a "
                f"hub id, but the hub is {reason}. Use `bundled` (offline) or a local Hugging Face folder."
            )
    try:
        return source, AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise StepInputError(
            f"base_model {base_model!r} cannot be loaded ({str(error).splitlines()[0]}). Use `bundled` "
            "(offline), a local Hugging Face folder, or a hub id where a hub is reachable."
        ) from None


def configure_head(config: AutoConfig, label_set: LabelSet) -> AutoConfig:
    """One output per class, and the classes' names in the config (id2label / label2id), in class order."""
    config.num_labels = label_set.size
    config.id2label = dict(enumerate(label_set.names))
    config.label2id = {name: index for index, name in enumerate(label_set.names)}
    return config


def check_labels(frame: pd.DataFrame, split: str, label_set: LabelSet, data_run_id: str) -> None:
    """The split's labels must be class indices of the run's label set."""
    labels = frame[LABEL_COLUMN]
    values = pd.to_numeric(labels, errors="coerce")
    bad = labels[values.isna() | (values % 1 != 0) | ~values.between(0, label_set.size - 1)]
    if len(bad):
        raise StepInputError(
            f"split {split} of preprocess run {data_run_id} holds labels that are not class indices "
            f"0..{label_set.size - 1} of its {label_set.size}-class label set (e.g. {bad.iloc[0]!r}): "
            "the run predates or breaks the label-set contract; rerun preprocess and train on the new run"
        )


def check_every_class_is_trained(labels: np.ndarray, label_set: LabelSet, max_train_samples: int) -> None:
    """A class without a single training row cannot be learned: say which, and what to do."""
    missing = np.flatnonzero(np.bincount(labels, minlength=label_set.size) == 0)
    if len(missing):
        names = ", ".join(repr(label_set.names[i]) for i in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        fix = (
            f"raise max_train_samples (now {max_train_samples}; -1 = all rows)"
            if max_train_samples != -1
            else "add training rows for them, or drop them from the data (and the labels parameter)"
        )
        raise StepInputError(
            f"{len(missing)} of {label_set.size} classes have no training rows ({names}{more}): {fix}"
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def per_class_metrics(labels: np.ndarray, predictions: np.ndarray, label_set: LabelSet) -> dict[str, float]:
    """`val_{precision,recall,f1,support}_class_<name>` of the shipped model (names made key-safe)."""
    metrics = classification_metrics(labels, predictions, label_set.size, label_set.names)
    return {f"val_{key}": value for key, value in metrics.items() if "_class_" in key}


def log_evaluation_artifacts(split: EncodedSplit, logits: np.ndarray, label_set: LabelSet) -> None:
    """What the shipped model does on validation: per-class metrics, confusion matrix, errors, report."""
    predictions = logits.argmax(axis=1)
    mlflow.log_metrics(per_class_metrics(split.labels, predictions, label_set))
    log_confusion_matrix(
        split.labels,
        predictions,
        "Validation confusion matrix (best epoch)",
        "evaluation/confusion_matrix.png",
        label_set.names,
    )
    mlflow.log_table(
        misclassified_table(split.texts, split.labels, logits, label_set.names),
        "evaluation/misclassified.json",
    )
    mlflow.log_text(
        classification_report(split.labels, predictions, label_set.names),
        "evaluation/classification_report.txt",
    )


def write_serving_config(
    tokenizer_dir: Path,
    args: argparse.Namespace,
    label_set: LabelSet,
    thresholds: tuple[float, ...] | None = None,
) -> Path:
    """The version's serving config; the name it is served under is building's to set. `thresholds`: a
    multi-label model's per-label decision thresholds (label_mode multi)."""
    multi = {"label_mode": MULTI_LABEL, "thresholds": thresholds} if thresholds is not None else {}
    config = ServingConfig(
        labels=tuple(label_set.names),
        max_seq_length=args.max_seq_length,
        model_name=LEGACY_SERVED_NAME,
        extra={"input_names": INPUT_NAMES, "output_name": OUTPUT_NAME},
        **multi,
    )
    config = serving_config_for(config, getattr(args, "text_pair_column", None))
    return config.write(tokenizer_dir / FILE_NAME)


# The run's metrics that describe the registered model itself, logged again against its model_id so that
# they show on the model's page (MLflow 3's logged model) as well as on the run's.
MODEL_METRIC_PREFIXES = ("val_", "best_val_", "parity_", "variant_", "decision_shift")


def log_and_register(
    onnx_path: Path,
    tokenizer_dir: Path,
    args: argparse.Namespace,
    label_set: LabelSet,
    thresholds: tuple[float, ...] | None = None,
) -> str:
    """Log the text-level pyfunc (ONNX graph, tokenizer, serving config), register a version (tagged with
    its run and its classes' names), alias it `challenger`, and log the validation metrics against the
    version's model_id."""
    serving_config = write_serving_config(tokenizer_dir, args, label_set, thresholds)
    info = log_text_model(
        onnx_path, tokenizer_dir / "tokenizer.json", serving_config, args.registered_model_name
    )
    version = str(info.registered_model_version)
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    model_metrics = {
        key: value
        for key, value in client.get_run(run_id).data.metrics.items()
        if key.startswith(MODEL_METRIC_PREFIXES)
    }
    if model_metrics:
        mlflow.log_metrics(model_metrics, model_id=info.model_id)
    client.set_registered_model_alias(args.registered_model_name, CHALLENGER_ALIAS, version)
    client.set_model_version_tag(args.registered_model_name, version, TRAIN_RUN_TAG, run_id)
    client.set_model_version_tag(args.registered_model_name, version, LABEL_NAMES_TAG, label_set.names_json())
    text_pair_column = getattr(args, "text_pair_column", None)
    if text_pair_column:
        client.set_model_version_tag(args.registered_model_name, version, TEXT_PAIR_TAG, text_pair_column)
    mlflow.set_tag(MODEL_VERSION_TAG, version)
    logger.info(
        "registered %s version %s (alias %s, model %s)",
        args.registered_model_name,
        version,
        CHALLENGER_ALIAS,
        info.model_id,
    )
    return version


def load_classifier(source: str, config: AutoConfig, pooling: str, base_model: str) -> torch.nn.Module:
    """The model to fine-tune; a checkpoint whose own classification head has another number of classes
    than the data cannot be loaded into this head (pooling=cls keeps the checkpoint's head)."""
    try:
        return build_classifier(source, config, pooling)
    except RuntimeError as error:
        # transformers 5 names `ignore_mismatched_sizes`; torch's load_state_dict says "size mismatch".
        if "mismatched_sizes" not in str(error) and "size mismatch" not in str(error):
            raise
        raise StepInputError(
            f"base_model {base_model!r} has a classification head of another size than the data's "
            f"{config.num_labels} classes (pooling={pooling}): use pooling=mean or pooling=mix (a new head "
            "on the encoder), or a base model without a classification head (e.g. `bundled`)"
        ) from None


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


@dataclass
class Prepared:
    """What every training of one step run shares: the data, encoded, and the backbone's set-up."""

    source: str
    config: AutoConfig
    label_set: LabelSet
    tokenizer: object
    train_split: EncodedSplit
    validation_split: EncodedSplit
    calibrate: bool
    precision: str
    data_run_id: str = ""
    multi_label: bool = False
    few_shot: bool = False
    # The training loss when a teacher is distilled (train/distill.py); None: cross-entropy on the labels.
    loss_fn: object = None
    # Whether validation picks the epoch (TrainConfig.select_epoch).
    select_epoch: bool = True


def prepare(args: argparse.Namespace) -> Prepared:
    """Check the parameters, resolve and read the preprocess run, encode its splits; tags the active run
    with its inputs, its label set, its decision calibration and the precision that will run."""
    validate_args(args)
    try:
        precision = resolve_precision(args.precision)
    except ValueError as error:
        raise StepInputError(str(error)) from None
    mlflow.set_tag(PRECISION_TAG, precision)
    source, config = load_backbone_config(args.base_model)
    data_run = resolve_step_run(args.data_run_id, "preprocess")
    data_run_id = data_run.info.run_id
    record_inputs(data_run_id=data_run_id)
    label_set = read_label_set(data_run_id)
    configure_head(config, label_set)
    multi = read_label_mode(data_run_id) == MULTI_LABEL
    if multi:  # a sigmoid per label, BCE-with-logits (the stock HF head reads problem_type)
        config.problem_type = "multi_label_classification"
    if multi and args.serve_variant == INT8:  # before training: the run could not serve what it asks for
        raise StepInputError(
            "serve_variant=int8 is served only when a paired bootstrap keeps its test MCC, a single-label "
            "measure; this data has several labels per text (label_mode=multi): use serve_variant=fp32 or "
            "optimized (docs/int8.md)"
        )
    mlflow.set_tag(LABEL_NAMES_TAG, label_set.names_json())
    # A sentence-pair task (pair_encoding.py): the serving config and the version say so.
    args.text_pair_column = read_text_pair_column(data_run_id)
    if args.text_pair_column:
        mlflow.set_tag(TEXT_PAIR_TAG, args.text_pair_column)
    # The margin shift is a two-class decision; for more classes the argmax decides (README: no per-class
    # bias is fitted, validation is too small per class to fit and check one on).
    calibrate = args.tune_threshold and label_set.is_binary and not multi
    mlflow.set_tag(DECISION_CALIBRATION_TAG, MARGIN_SHIFT if calibrate else NO_CALIBRATION)
    if multi:
        logger.info("several labels per text: one decision threshold per label, tuned on validation")
    elif args.tune_threshold and not calibrate:
        logger.info(
            "tune_threshold: %d classes, no decision calibration (the argmax decides)", label_set.size
        )
    mlflow.log_param("torch_threads", torch.get_num_threads())
    train_frame = read_split(data_run_id, "train")
    validation_frame = read_split(data_run_id, "validation", allow_empty=True)  # empty: few-shot data
    check = multilabel_head.check_lists if multi else None
    for name, frame in (("train", train_frame), ("validation", validation_frame)):
        if check:
            check(frame, LABEL_COLUMN, name, label_set, data_run_id)
        else:
            check_labels(frame, name, label_set, data_run_id)
    # A few-shot data set may have no validation rows (MLflow cannot digest an empty frame).
    split_frames = {"train": train_frame, "validation": validation_frame}
    log_split_inputs(data_run_id, {name: frame for name, frame in split_frames.items() if len(frame)})
    few_shot = choose_few_shot(args, train_frame, label_set, multi)
    if args.max_train_samples != -1 and args.max_train_samples < len(train_frame):
        train_frame = train_frame.sample(n=args.max_train_samples, random_state=args.seed).reset_index(
            drop=True
        )
    # Rows per class after the cap (few-shot is single-label: a multi-label frame's labels are lists).
    counts = (
        np.bincount(train_frame[LABEL_COLUMN].to_numpy(np.int64), minlength=label_set.size)
        if few_shot
        else None
    )
    check_few_shot_data(few_shot, counts, len(validation_frame), args)
    if args.batch_size > len(train_frame) and not few_shot:  # few-shot batches pairs, not rows
        raise StepInputError(
            f"batch_size {args.batch_size} is larger than the {len(train_frame)} training rows: lower "
            "batch_size or raise max_train_samples"
        )
    if multi:
        targets = multilabel_head.multi_hot(train_frame[LABEL_COLUMN], label_set.size)
        multilabel_head.check_every_label_is_trained(targets, label_set)
    else:
        check_every_class_is_trained(
            train_frame[LABEL_COLUMN].to_numpy(np.int64), label_set, args.max_train_samples
        )

    tokenizer = AutoTokenizer.from_pretrained(source)
    size = label_set.size if multi else 0
    train_split = encode_split(train_frame, tokenizer, args.max_seq_length, size)
    validation_split = (
        encode_split(validation_frame, tokenizer, args.max_seq_length, size)
        if len(validation_frame)
        else EncodedSplit([], np.zeros(0, np.int64), [])  # few-shot without validation: cross-validated
    )
    if few_shot and calibrate:  # the head is a logistic regression: its own probabilities decide
        calibrate = False
        mlflow.set_tag(DECISION_CALIBRATION_TAG, NO_CALIBRATION)
    return Prepared(
        source,
        config,
        label_set,
        tokenizer,
        train_split,
        validation_split,
        calibrate,
        precision,
        data_run_id,
        multi,
        few_shot,
    )


def choose_few_shot(
    args: argparse.Namespace, train_frame: pd.DataFrame, label_set: LabelSet, multi: bool
) -> bool:
    """Whether this run trains few-shot (few_shot=auto|true|false). Few labels are a property of the data,
    not of a max_train_samples cap (a quick run on big data), so rows are counted before it. Few-shot is a
    single-label recipe whose head is judged on fp32: multi-label data and serve_variant=int8 are refused
    when few-shot is asked for (auto then fine-tunes multi-label data)."""
    if multi:
        if args.few_shot == "true":
            raise StepInputError(
                "few_shot=true trains a single-label head (one class per text); this data has several labels "
                "per text (label_mode=multi): use few_shot=false or auto (docs/few-labels.md)"
            )
        return False
    labelled = np.bincount(train_frame[LABEL_COLUMN].to_numpy(np.int64), minlength=label_set.size)
    few_shot = use_few_shot(args.few_shot, labelled, args.few_shot_threshold)
    if few_shot and args.serve_variant == INT8:  # before training: the run could not serve what it asks for
        raise StepInputError(
            "this run trains few-shot (few_shot="
            f"{args.few_shot}, the rarest class has {int(labelled.min())} training rows), which serves fp32 "
            "only: use serve_variant=fp32 or optimized, or few_shot=false with more labelled rows "
            "(docs/few-labels.md)"
        )
    return few_shot


def check_few_shot_data(few_shot: bool, counts: np.ndarray | None, validation_rows: int, args) -> None:
    """A preprocess run without a validation split (too few rows to hold any out) can only be trained
    few-shot, which cross-validates instead; few-shot needs two rows of every class for a positive pair."""
    if not few_shot and validation_rows == 0:
        raise StepInputError(
            "the preprocess run has no validation split (too few rows per class to hold any out), which "
            f"only the few-shot mode can train on (it cross-validates): use few_shot=auto or true "
            f"(now {args.few_shot}), or add labelled rows and rerun preprocess"
        )
    if few_shot and counts.min() < MIN_ROWS_PER_CLASS:
        raise StepInputError(
            f"few-shot training needs at least {MIN_ROWS_PER_CLASS} training rows of every class (pairs of "
            f"the same class), the rarest has {int(counts.min())}: add labelled rows of it"
        )


def fit(
    prepared: Prepared, args: argparse.Namespace, log_epoch, dropout: float | None = None
) -> tuple[torch.nn.Module, dict]:
    """A fresh model trained with `args`' recipe (`dropout`: the head's and the encoder's, else the
    backbone's own); `log_epoch(epoch, metrics)` gets each epoch's metrics (and may raise to stop it). The
    summary is logged to the active run. The trained model (its best epoch's weights) and the summary."""
    seed_everything(args.seed)
    source, config, calibrate = prepared.source, prepared.config, prepared.calibrate
    if dropout is not None:
        config = copy.deepcopy(config)
        config.hidden_dropout_prob = dropout
    model = load_classifier(source, config, args.pooling, args.base_model)
    if calibrate:
        try:  # before training: a head the threshold cannot be folded into must not cost a whole run
            output_layer(model)
        except ValueError as error:
            raise StepInputError(str(error)) from None
    train_split, validation_split = prepared.train_split, prepared.validation_split
    logger.info(
        "training on %d rows, validating on %d, %d torch threads, %s",
        len(train_split),
        len(validation_split),
        torch.get_num_threads(),
        prepared.precision,
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
        tune_threshold=calibrate,
        precision=prepared.precision,
        loss_fn=prepared.loss_fn,
        select_epoch=prepared.select_epoch,
    )
    summary = train(
        model, train_split, validation_split, train_config, prepared.tokenizer.pad_token_id, log_epoch
    )
    mlflow.log_metrics(summary)
    return model, summary


def finish(
    model: torch.nn.Module,
    prepared: Prepared,
    args: argparse.Namespace,
    validated: tuple[EncodedSplit, np.ndarray] | None = None,
) -> str:
    """The trained model's threshold, evaluation artifacts, ONNX export, parity check, variants, and its
    registered version (`challenger`), all on the active run; the version. `validated` (few-shot, whose
    shipped model trained on the validation rows too): the rows that stand for validation and their logits
    from a model that did not train on them, which the evaluation artifacts show instead; without a
    validation split the export is checked on the training rows."""
    tokenizer, config, label_set = prepared.tokenizer, prepared.config, prepared.label_set
    validation_split, calibrate = prepared.validation_split, prepared.calibrate
    if not len(validation_split):
        validation_split = prepared.train_split

    logits, _ = predict(model, validation_split, args.batch_size * 2, tokenizer.pad_token_id)
    if calibrate:
        logits = tune_threshold(model, validation_split, logits, args.batch_size * 2, tokenizer.pad_token_id)
    thresholds = None
    if prepared.multi_label:  # per-label thresholds tuned on validation, shipped in the serving config
        thresholds = multilabel_head.tune_and_log(validation_split.labels, logits, label_set.names)
    else:
        log_evaluation_artifacts(*(validated or (validation_split, logits)), label_set)

    with tempfile.TemporaryDirectory(prefix="sentclf-train-") as tmp:
        tmp_dir = Path(tmp)
        sample = collate(validation_split, np.arange(min(4, len(validation_split))), tokenizer.pad_token_id)
        onnx_path = export_onnx(model, sample, tmp_dir / "model.onnx")
        parity = parity_report(model, onnx_path, validation_split, tokenizer.pad_token_id)
        mlflow.log_metrics(parity)
        check_parity(parity)
        wants_int8 = args.serve_variant == INT8
        calibration = TrainingRows(prepared.train_split.input_ids, seed=args.seed) if wants_int8 else None
        variants = build_variants(onnx_path, config, tmp_dir, calibration)
        compared = compare_variants(variants, validation_split, logits, tokenizer.pad_token_id)
        mlflow.log_metrics(compared)
        served = choose_variant(variants, compared, prepared, args)
        mlflow.set_tag(SERVED_VARIANT_TAG, INT8 if served in CANDIDATES else served)
        for name, path in variants.items():
            if name != served:  # the served one is the logged model itself
                mlflow.log_artifact(str(path), ONNX_VARIANTS_DIR)
        tokenizer_dir = tmp_dir / "tokenizer"
        tokenizer.save_pretrained(str(tokenizer_dir))
        return log_and_register(variants[served], tokenizer_dir, args, label_set, thresholds)


def choose_variant(
    variants: dict[str, Path], compared: dict[str, float], prepared: Prepared, args: argparse.Namespace
) -> str:
    """The variant asked for, except int8: the int8 model validation picks (`compared`: compare_variants'
    figures), served only when it keeps fp32's test MCC within int8_max_mcc_loss on the same test rows,
    else fp32 (int8.py); the comparison is recorded."""
    if args.serve_variant != INT8:
        return args.serve_variant
    frame = read_split(prepared.data_run_id, "test")
    check_labels(frame, "test", prepared.label_set, prepared.data_run_id)
    log_split_inputs(prepared.data_run_id, {"test": frame})
    test_split = encode_split(frame, prepared.tokenizer, args.max_seq_length)
    pad_id = prepared.tokenizer.pad_token_id
    candidate, picked = pick_on_validation(
        {name: compared[f"variant_{name}_val_mcc_delta"] for name in CANDIDATES},
        {name: compared[f"variant_{name}_sentences_per_s"] for name in CANDIDATES},
    )
    fp32, int8 = (
        onnx_logits(variants[name], test_split, pad_id).argmax(axis=1) for name in ("fp32", candidate)
    )
    classes = prepared.label_set.size
    decision = decide(
        test_split.labels, fp32, int8, classes, args.int8_max_mcc_loss, candidate=candidate, picked=picked
    )
    record(decision)
    return decision.served_variant


def log_epoch_metrics(epoch: int, metrics: dict) -> None:
    mlflow.log_metrics(metrics, step=epoch)


def fit_few_shot_model(
    prepared: Prepared, args: argparse.Namespace, refit: bool = True
) -> tuple[torch.nn.Module, tuple[EncodedSplit, np.ndarray], dict]:
    """The few-shot model (train/few_shot.py), trained on every labelled row (with `refit` off, on the
    training rows only), with the rows that stand for validation and their logits from a model that did
    not train on them (the held-out validation split, or cross-validated training rows when there is none),
    and the validation metrics from those."""
    seed_everything(args.seed)
    result = fit_few_shot(
        prepared.source,
        prepared.config,
        prepared.train_split,
        prepared.validation_split,
        args.batch_size,
        args.seed,
        prepared.tokenizer.pad_token_id,
        args.few_shot_iterations,
        refit,
    )
    if result.folds:
        mlflow.set_tag(VALIDATION_MODE_TAG, f"cross_validation_{result.folds}_folds")
    checked, logits = result.validated, result.validation_logits
    size = prepared.label_set.size
    summary = classification_metrics(checked.labels, logits.argmax(axis=1), size, per_class=False)
    mlflow.log_metrics(result.summary | {f"val_{key}": value for key, value in summary.items()})
    logger.info("few-shot: %d training rows, validation %s", result.trained_rows, summary)
    return result.model, (checked, logits), summary


def fit_few_shot_teacher(prepared: Prepared, args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """A teacher trained few-shot on few-label data (train/distill.py), with its validation MCC: on the
    training rows only where there is a validation split (few_shot.fit_few_shot: refit costs it double)."""
    model, _, summary = fit_few_shot_model(prepared, args, refit=False)
    return model, {"best_val_mcc": summary["mcc"]}


def run(args: argparse.Namespace) -> None:
    prepared = prepare(args)
    labelled_rows = len(prepared.train_split)
    prepared = attach_teacher(prepared, args, fit, fit_few_shot_teacher)
    mode = TRAINING_FEW_SHOT if prepared.few_shot else TRAINING_FINE_TUNE
    mlflow.set_tags(
        {
            TRAINING_MODE_TAG: mode,
            TRAINING_ROWS_TAG: labelled_rows,
            TRAINING_UNLABELLED_ROWS_TAG: len(prepared.train_split) - labelled_rows,
            VALIDATION_MODE_TAG: VALIDATION_HELD_OUT,
        }
    )
    if prepared.few_shot:
        model, validated, _ = fit_few_shot_model(prepared, args)
        # The shipped few-shot model trained on the validation rows too (few_shot.py).
        mlflow.set_tag(TRAINING_ROWS_TAG, labelled_rows + len(prepared.validation_split))
        finish(model, prepared, args, validated)
        return
    model, _ = fit(prepared, args, log_epoch_metrics)
    finish(model, prepared, args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TORCH_NUM_THREADS", os.cpu_count() or 1)))
    with step_run("train"):
        run(args)


if __name__ == "__main__":
    main()
