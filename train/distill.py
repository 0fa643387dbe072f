"""Distillation from a teacher (`-P teacher=...`): a larger encoder is fine-tuned on the task once, its
logits on the training rows become soft targets, and the served student learns from them as well as from
the labels (Hinton et al., "Distilling the Knowledge in a Neural Network"):

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

The teacher runs in its own MLflow run, nested in the train run (its parameters, per-epoch metrics, cost,
and its logits as an artifact), keyed by a fingerprint of the teacher's files, the data it learns from and
its recipe: a later train run with the same key reuses those logits instead of training the teacher again
(the nightly retrain pays for the teacher only when the data or the teacher changed). The teacher's weights
are logged on its own run (teacher/model) so that a reused teacher can label new text, and never
registered or served: only the student is exported, registered and served. docs/teacher.md.
"""

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoTokenizer

from sentclf.contract import TRAINING_FEW_SHOT, TRAINING_FINE_TUNE
from sentclf.data import read_split
from sentclf.metrics import classification_metrics
from sentclf.schema import DATA_ARTIFACT_DIR, LABEL_COLUMN, TEXT_COLUMN
from sentclf.teacher_weights import (
    FILE_SHA256,
    MPNET,
    TeacherWeightsError,
    cache_root,
    mpnet_dir,
    sha256_file,
)
from sentclf.tracking import StepInputError

from few_shot import FewShotClassifier, embeddings, self_trained_logits
from modeling import build_classifier
from training import EncodedSplit, predict

logger = logging.getLogger("train.distill")

NO_TEACHER = "none"
# The teacher run's key (what it learned from, in a hash) and role; the student's run names its teacher.
TEACHER_KEY_TAG = "sentclf.teacher_key"
TEACHER_ROLE_TAG = "sentclf.role"
TEACHER_ROLE = "teacher"
TEACHER_RUN_TAG = "teacher_run_id"
TEACHER_REUSED_TAG = "teacher_reused"
# How the teacher was trained, in the train run's own words (contract.TRAINING_FINE_TUNE: the step's loop;
# TRAINING_FEW_SHOT: few-label data with unlabelled text, SetFit's recipe on the teacher, train/few_shot.py),
# which decides the class its weights load into.
TEACHER_KIND_TAG = "sentclf.teacher_kind"
FINE_TUNE_TEACHER, FEW_SHOT_TEACHER = TRAINING_FINE_TUNE, TRAINING_FEW_SHOT
LOGITS_ARTIFACT = "teacher/logits.npz"
# The fine-tuned teacher (its weights and config; never registered nor served): what labels the unlabelled
# text of a later run without training the teacher again.
TEACHER_MODEL_ARTIFACT = "teacher/model"
WEIGHTS_FILE = "model.safetensors"
# preprocess's unlabelled text (preprocess/unlabelled.py).
UNLABELLED_ARTIFACT = f"{DATA_ARTIFACT_DIR}/unlabelled.parquet"
# Bump when the teacher's training changes in a way its key's inputs do not show.
KEY_VERSION = "1"


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """KL to the teacher's softened distribution (scaled by T^2, so its gradients keep their size as T
    changes) mixed by `alpha` with cross-entropy on the labels; alpha = 0 is plain cross-entropy."""
    hard = torch.nn.functional.cross_entropy(student, labels)
    if alpha == 0:
        return hard
    soft = torch.nn.functional.kl_div(
        torch.log_softmax(student / temperature, dim=-1),
        torch.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def distillation_loss_fn(temperature: float, alpha: float) -> Callable:
    """The train loop's loss (precision.LossFn): the batch carries the teacher's logits (collate)."""

    def loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return distillation_loss(logits, batch["teacher_logits"], batch["labels"], temperature, alpha)

    return loss


def check_distill_args(args: argparse.Namespace) -> list[str]:
    """The distillation parameters' problems, each with the fix (empty: fine)."""
    checks = [
        (args.distill_temperature > 0, f"distill_temperature must be > 0, got {args.distill_temperature}"),
        (0 <= args.distill_alpha <= 1, f"distill_alpha must be in [0, 1], got {args.distill_alpha}"),
        (args.teacher_epochs >= 1, f"teacher_epochs must be >= 1, got {args.teacher_epochs}"),
        (
            args.teacher_learning_rate > 0,
            f"teacher_learning_rate must be > 0, got {args.teacher_learning_rate}",
        ),
        (
            bool(args.teacher.strip()),
            "teacher must be `none`, `mpnet`, a local Hugging Face folder or a hub id",
        ),
        (
            args.teacher == NO_TEACHER or args.few_shot != "true",
            "few_shot=true trains a contrastive few-label model, which a teacher's soft targets do not "
            "train: use teacher=none, or few_shot=false to distill",
        ),
    ]
    return [message for ok, message in checks if not ok]


def resolve_teacher(teacher: str) -> str:
    """What `from_pretrained` loads: `mpnet` (the checked offline all-mpnet-base-v2), a folder (as given,
    or by its name in the teacher cache, which the train step's container mounts), or a hub id."""
    if teacher == MPNET:
        try:
            return str(mpnet_dir())
        except TeacherWeightsError as error:
            raise StepInputError(f"teacher=mpnet: {error}") from None
    cached = cache_root() / teacher
    if not Path(teacher).is_dir() and "/" not in teacher.strip("/") and cached.is_dir():
        return str(cached)
    return teacher


def teacher_fingerprint(teacher: str, source: str) -> str:
    """What identifies the teacher's weights: the recorded sha256 (mpnet), every file's bytes (a folder),
    or the hub id (whose files the hub may change: pin a folder to be sure)."""
    digest = hashlib.sha256()
    if teacher == MPNET:
        digest.update(json.dumps(FILE_SHA256, sort_keys=True).encode())
    elif Path(source).is_dir():
        for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(source)}\t{sha256_file(path)}\n".encode())
    else:
        digest.update(source.encode())
    return digest.hexdigest()


def split_fingerprint(split: EncodedSplit) -> str:
    digest = hashlib.sha256()
    for text, label in zip(split.texts, split.labels.tolist(), strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def teacher_key(args: argparse.Namespace, fingerprint: str, prepared) -> str:
    """The hash of everything the teacher's logits depend on: a match means they can be reused as they are."""
    parts = {
        "version": KEY_VERSION,
        "teacher": fingerprint,
        "train": split_fingerprint(prepared.train_split),
        "validation": split_fingerprint(prepared.validation_split),
        "labels": list(prepared.label_set.names),
        "recipe": [
            args.teacher_epochs,
            args.teacher_learning_rate,
            args.max_seq_length,
            args.batch_size,
            args.seed,
            args.patience,
            args.warmup_ratio,
            args.weight_decay,
            prepared.precision,
        ],
    }
    if prepared.few_shot:  # a few-shot teacher (fine-tuned teachers keep their keys)
        parts["pair_iterations"] = args.few_shot_iterations
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def find_teacher_run(key: str) -> mlflow.entities.Run | None:
    """The newest finished teacher run of this experiment with this key, if any."""
    experiment_id = mlflow.active_run().info.experiment_id
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{TEACHER_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


def reused_logits(run: mlflow.entities.Run, rows: int) -> np.ndarray | None:
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=LOGITS_ARTIFACT)
    except (OSError, mlflow.exceptions.MlflowException):
        return None
    logits = np.load(path)["train"]
    return logits if logits.shape[0] == rows else None


def teacher_prepared(prepared, source: str, max_seq_length: int):
    """The student's data, tokenized for the teacher, with the teacher's backbone and the same head size."""
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise StepInputError(
            f"teacher {source!r} cannot be loaded ({str(error).splitlines()[0]}): use `mpnet`, `none`, a "
            "local Hugging Face folder or a hub id where a hub is reachable"
        ) from None
    config.num_labels = prepared.label_set.size
    config.id2label = dict(enumerate(prepared.label_set.names))
    config.label2id = {name: index for index, name in enumerate(prepared.label_set.names)}

    def encode(split: EncodedSplit) -> EncodedSplit:
        ids = tokenizer(split.texts, truncation=True, max_length=max_seq_length)["input_ids"]
        return EncodedSplit(ids, split.labels, split.texts)

    return dataclasses.replace(
        prepared,
        source=source,
        config=config,
        tokenizer=tokenizer,
        train_split=encode(prepared.train_split),
        validation_split=encode(prepared.validation_split),
        calibrate=False,
        loss_fn=None,
    )


def teacher_args(args: argparse.Namespace, source: str) -> argparse.Namespace:
    """The teacher's recipe: the step's, with its own epochs and learning rate, mean pooling, one rate for
    every layer (a larger model at a small rate), no weight average."""
    own = copy.copy(args)
    own.epochs, own.learning_rate = args.teacher_epochs, args.teacher_learning_rate
    own.pooling, own.layer_lr_decay, own.ema_decay, own.base_model = "mean", 1.0, 0.0, source
    return own


def teacher_test_metrics(model: torch.nn.Module, own_prepared, batch_size: int, max_seq_length: int) -> dict:
    """The teacher's own MCC and accuracy on the test rows (argmax, no calibration): the figure that says
    how much better than the student it is (docs/teacher.md). Reported only, never used to choose."""
    if not own_prepared.data_run_id:
        return {}
    frame = read_split(own_prepared.data_run_id, "test")
    texts = frame[TEXT_COLUMN].tolist()
    ids = own_prepared.tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]
    split = EncodedSplit(ids, frame[LABEL_COLUMN].to_numpy(np.int64), texts)
    logits, _ = predict(model, split, batch_size * 2, own_prepared.tokenizer.pad_token_id)
    size = own_prepared.label_set.size
    metrics = classification_metrics(split.labels, logits.argmax(axis=1), size, per_class=False)
    return {f"teacher_test_{name}": value for name, value in metrics.items() if name in ("mcc", "accuracy")}


def train_teacher(
    prepared, own_prepared, args: argparse.Namespace, source: str, key: str, fit, fit_few=None
) -> tuple[np.ndarray, torch.nn.Module]:
    """Fine-tune the teacher on `own_prepared` (teacher_prepared) in a nested run (its metrics, cost,
    logits and weights logged); its train rows' logits and the model."""
    own_args = teacher_args(args, source)
    with mlflow.start_run(run_name="teacher", nested=True):
        kind = FEW_SHOT_TEACHER if prepared.few_shot else FINE_TUNE_TEACHER
        mlflow.set_tags({TEACHER_KEY_TAG: key, TEACHER_ROLE_TAG: TEACHER_ROLE, TEACHER_KIND_TAG: kind})
        mlflow.log_params(
            {
                "teacher": args.teacher,
                "teacher_source": source,
                "epochs": own_args.epochs,
                "learning_rate": own_args.learning_rate,
                "max_seq_length": args.max_seq_length,
                "batch_size": args.batch_size,
                "seed": args.seed,
            }
        )
        started = time.perf_counter()
        if prepared.few_shot:
            model, summary = fit_few(own_prepared, own_args)
        else:
            model, summary = fit(own_prepared, own_args, lambda epoch, m: mlflow.log_metrics(m, step=epoch))
        pad_id = own_prepared.tokenizer.pad_token_id
        batch = args.batch_size * 2
        train_logits, _ = predict(
            model, own_prepared.train_split, batch, pad_id, progress="teacher soft targets"
        )
        validation_logits, _ = predict(model, own_prepared.validation_split, batch, pad_id)
        mlflow.log_metrics(
            {
                "teacher_train_seconds": time.perf_counter() - started,
                "teacher_parameters": sum(p.numel() for p in model.parameters()),
            }
        )
        test_metrics = teacher_test_metrics(model, own_prepared, args.batch_size, args.max_seq_length)
        mlflow.log_metrics(test_metrics)
        with tempfile.TemporaryDirectory(prefix="sentclf-teacher-") as tmp:
            path = Path(tmp) / Path(LOGITS_ARTIFACT).name
            np.savez(path, train=train_logits, validation=validation_logits)
            mlflow.log_artifact(str(path), str(Path(LOGITS_ARTIFACT).parent))
            log_teacher_model(model, own_prepared.config, Path(tmp) / "model")
        run_id = mlflow.active_run().info.run_id
    logger.info("teacher trained (run %s): best val MCC %.4f", run_id, summary["best_val_mcc"])
    mlflow.set_tags({TEACHER_RUN_TAG: run_id, TEACHER_REUSED_TAG: "false"})
    mlflow.log_metrics({"teacher_best_val_mcc": summary["best_val_mcc"], **test_metrics})
    return train_logits, model


def log_teacher_model(model: torch.nn.Module, config, folder: Path) -> None:
    """The fine-tuned teacher's weights and config under the teacher run's teacher/model (a mean-pooling
    classifier over `teacher_source`, modeling.py), so a later run can label new text with it."""
    folder.mkdir(parents=True)
    save_file(
        {name: tensor.contiguous() for name, tensor in model.state_dict().items()}, folder / WEIGHTS_FILE
    )
    config.save_pretrained(folder)
    mlflow.log_artifacts(str(folder), TEACHER_MODEL_ARTIFACT)


def load_teacher_model(run: mlflow.entities.Run, own_prepared) -> torch.nn.Module | None:
    """The teacher a finished teacher run logged (None: a run from before teachers were kept)."""
    try:
        folder = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=TEACHER_MODEL_ARTIFACT
        )
    except (OSError, mlflow.exceptions.MlflowException):
        return None
    if run.data.tags.get(TEACHER_KIND_TAG) == FEW_SHOT_TEACHER:
        model = FewShotClassifier(own_prepared.source, own_prepared.config)
    else:
        model = build_classifier(own_prepared.source, own_prepared.config, "mean")
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))
    return model.eval()


def read_unlabelled(data_run_id: str) -> list[str]:
    """preprocess's unlabelled text (its `unlabelled` parameter), or [] when it was given none."""
    if not data_run_id:
        return []
    listed = {item.path for item in mlflow.MlflowClient().list_artifacts(data_run_id, DATA_ARTIFACT_DIR)}
    if UNLABELLED_ARTIFACT not in listed:
        return []
    with tempfile.TemporaryDirectory(prefix="sentclf-unlabelled-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=data_run_id, artifact_path=UNLABELLED_ARTIFACT, dst_path=tmp
        )
        return pd.read_parquet(path)[TEXT_COLUMN].tolist()


def label_unlabelled(
    model: torch.nn.Module, own_prepared, texts: list[str], args: argparse.Namespace
) -> np.ndarray:
    """The teacher's logits on the unlabelled text, with the time it took logged; a few-shot teacher's are
    its self-trained head's (few_shot_labels)."""
    started = time.perf_counter()
    ids = own_prepared.tokenizer(texts, truncation=True, max_length=args.max_seq_length)["input_ids"]
    split = EncodedSplit(ids, np.zeros(len(texts), np.int64), texts)
    pad_id = own_prepared.tokenizer.pad_token_id
    if isinstance(model, FewShotClassifier):
        logits = few_shot_labels(model, own_prepared, split, args)
    else:
        logits, _ = predict(
            model, split, args.batch_size * 2, pad_id, progress="teacher labelling unlabelled text"
        )
    mlflow.log_metrics(
        {"teacher_unlabelled_rows": len(texts), "teacher_unlabelled_seconds": time.perf_counter() - started}
    )
    logger.info("teacher: labelled %d unlabelled texts in %.0f s", len(texts), time.perf_counter() - started)
    return logits


def few_shot_labels(
    model: FewShotClassifier, own_prepared, split: EncodedSplit, args: argparse.Namespace
) -> np.ndarray:
    """A few-shot teacher labels the text with its head self-trained on the text's embeddings
    (few_shot.self_trained_logits): its own head learned from a handful of rows per class, and the
    confident part of the text teaches it the rest. Logs the share of texts whose label that changed."""
    pad_id, batch = own_prepared.tokenizer.pad_token_id, args.batch_size * 2
    unlabelled = embeddings(model, split, pad_id, batch, progress="teacher labelling unlabelled text")
    labelled = embeddings(model, own_prepared.train_split, pad_id, batch)
    with torch.inference_mode():
        own = model.classifier(torch.from_numpy(unlabelled)).float().numpy()
    logits, rounds = self_trained_logits(
        labelled, own_prepared.train_split.labels, unlabelled, own, args.seed
    )
    mlflow.log_metrics(
        {
            "teacher_self_training_rounds": rounds,
            "teacher_unlabelled_relabelled": float(np.mean(logits.argmax(axis=1) != own.argmax(axis=1))),
        }
    )
    return logits


def with_unlabelled(
    split: EncodedSplit, texts: list[str], logits: np.ndarray, prepared, max_seq_length: int
) -> EncodedSplit:
    """The student's training rows and the unlabelled ones: each of those learns the teacher's soft targets
    and, as its label, the teacher's most likely class."""
    ids = prepared.tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]
    return EncodedSplit(
        split.input_ids + ids,
        np.concatenate([split.labels, logits.argmax(axis=1).astype(split.labels.dtype)]),
        split.texts + texts,
        None,
        np.concatenate([split.teacher_logits, logits]).astype(np.float32),
    )


def refuse_unsupported(prepared, args: argparse.Namespace, unlabelled: bool = False) -> None:
    """The tasks distillation does not train (before a teacher costs anything): the distillation loss is a
    softmax over one class per text, and the teacher reads single sentences."""
    if prepared.few_shot and not unlabelled:
        raise StepInputError(
            f"teacher={args.teacher}: this data trains few-shot (the rarest class has fewer than "
            f"few_shot_threshold={args.few_shot_threshold} training rows), which a teacher's soft targets on "
            "the same rows do not train: give unlabelled text for a few-shot teacher to label "
            "(-P unlabelled=..., docs/teacher.md), use teacher=none, or few_shot=false to fine-tune and "
            "distill"
        )
    if prepared.few_shot and not len(prepared.validation_split):
        raise StepInputError(
            f"teacher={args.teacher}: the student learns the text the few-shot teacher labels by "
            "fine-tuning, which needs validation rows to score it on, and this data has none (too few "
            "rows per class for preprocess to hold any out): label a few more rows per class, or use "
            "teacher=none"
        )
    if prepared.multi_label:
        raise StepInputError(
            f"teacher={args.teacher}: distillation matches one softmax over the classes per text; this data "
            "has several labels per text (label_mode=multi): use teacher=none (docs/multi-label.md)"
        )
    if prepared.train_split.token_type_ids is not None:
        raise StepInputError(
            f"teacher={args.teacher}: the teacher reads single sentences; this is a sentence-pair task "
            "(text_pair_column): use teacher=none (docs/pairs.md)"
        )


def attach_teacher(prepared, args: argparse.Namespace, fit, fit_few=None):
    """`prepared` with the teacher's logits on its train rows (and on preprocess's unlabelled text, added to
    the training rows) and the distillation loss (teacher=none: as it is). The teacher is trained once per
    key; a finished teacher run with the same key is reused, and its logged weights label new text."""
    unlabelled = read_unlabelled(getattr(prepared, "data_run_id", ""))
    if args.teacher == NO_TEACHER:
        if unlabelled:
            logger.warning(
                "the data's %d unlabelled texts are not used: only a teacher labels them", len(unlabelled)
            )
        return prepared
    refuse_unsupported(prepared, args, bool(unlabelled) and fit_few is not None)
    source = resolve_teacher(args.teacher)
    key = teacher_key(args, teacher_fingerprint(args.teacher, source), prepared)
    previous = find_teacher_run(key)
    logits = reused_logits(previous, len(prepared.train_split)) if previous is not None else None
    # Tokenized for the teacher once: to train it, or to label the text with reused weights.
    needed = logits is None or unlabelled
    own_prepared = teacher_prepared(prepared, source, args.max_seq_length) if needed else None
    model = load_teacher_model(previous, own_prepared) if logits is not None and unlabelled else None
    if logits is not None and (model is not None or not unlabelled):
        logger.info("teacher: reusing run %s (same teacher, data and recipe)", previous.info.run_id)
        mlflow.set_tags({TEACHER_RUN_TAG: previous.info.run_id, TEACHER_REUSED_TAG: "true"})
        if "best_val_mcc" in previous.data.metrics:
            mlflow.log_metric("teacher_best_val_mcc", previous.data.metrics["best_val_mcc"])
    else:
        logits, model = train_teacher(prepared, own_prepared, args, source, key, fit, fit_few)
    train_split = dataclasses.replace(prepared.train_split, teacher_logits=logits.astype(np.float32))
    if unlabelled:
        extra = label_unlabelled(model, own_prepared, unlabelled, args)
        train_split = with_unlabelled(train_split, unlabelled, extra, prepared, args.max_seq_length)
    loss_fn = distillation_loss_fn(args.distill_temperature, args.distill_alpha)
    if not prepared.few_shot:
        return dataclasses.replace(prepared, train_split=train_split, loss_fn=loss_fn)
    # Few-label data: the few-shot teacher labelled the text, the student fine-tunes on all of it, every
    # epoch: a validation row or two per class scores every epoch alike, so choosing would keep the first
    # (measured on TREC with 8 rows per class: the last of 5 epochs 0.853, the first 0.840; few-labels.md).
    return dataclasses.replace(
        prepared, train_split=train_split, loss_fn=loss_fn, few_shot=False, select_epoch=False
    )
