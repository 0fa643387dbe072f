"""The fine-tuning loop: tokenize, batch by length, AdamW with linear warm-up/decay, early stopping."""

import contextlib
import copy
import logging
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.nn.utils import clip_grad_norm_
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from sentclf.metrics import classification_metrics
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN

import multilabel_head
from calibration import best_margin_shift
from pair_encoding import encode_pairs, is_pairs
from precision import LossFn, model_inputs, training_steps

logger = logging.getLogger(__name__)

# Batches are formed from pools of this many batches sorted by length: little padding (fast on CPU)
# while the order of the pools stays random.
LENGTH_POOL_BATCHES = 50


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    max_seq_length: int
    seed: int
    patience: int
    warmup_ratio: float
    weight_decay: float
    layer_lr_decay: float = 1.0
    ema_decay: float = 0.0
    # Select the epoch on the MCC after threshold tuning: the model that is shipped, not the raw argmax.
    tune_threshold: bool = False
    max_grad_norm: float = 1.0
    # `bf16` or `fp32` (resolved by precision.resolve_precision): the training passes only.
    precision: str = "fp32"
    # The training loss when not cross-entropy on the labels (distillation, train/distill.py).
    loss_fn: LossFn | None = None
    # False: every epoch runs and the last one's weights are kept, validation only reported. For a
    # validation split too small to tell epochs apart (a few-label data set's row per class, where every
    # epoch scores the same and the first would be kept).
    select_epoch: bool = True


@dataclass
class EncodedSplit:
    input_ids: list[list[int]]
    labels: np.ndarray
    texts: list[str]
    token_type_ids: list[list[int]] | None = None  # a sentence-pair split's segments (pair_encoding.py)
    # A teacher's logits for each row (distillation, train/distill.py); batches carry them when set.
    teacher_logits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_split(
    frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_seq_length: int, multi_label_size: int = 0
) -> EncodedSplit:
    """`multi_label_size` > 0: the labels are lists of label indices, encoded multi-hot (float32)."""
    labels = (
        multilabel_head.multi_hot(frame[LABEL_COLUMN], multi_label_size)
        if multi_label_size
        else frame[LABEL_COLUMN].to_numpy(np.int64)
    )
    if is_pairs(frame):
        input_ids, token_type_ids, shown = encode_pairs(frame, tokenizer, max_seq_length)
        return EncodedSplit(input_ids, labels, shown, token_type_ids)
    encoded = tokenizer(frame[TEXT_COLUMN].tolist(), truncation=True, max_length=max_seq_length)
    return EncodedSplit(encoded["input_ids"], labels, frame[TEXT_COLUMN].tolist())


def collate(split: EncodedSplit, indices: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad one batch to its own longest sequence (dynamic padding)."""
    sequences = [split.input_ids[i] for i in indices]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    token_type_ids = torch.zeros_like(input_ids)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
        if split.token_type_ids is not None:  # a pair's second segment, as the runtime's scorer feeds it
            token_type_ids[row, : len(sequence)] = torch.tensor(split.token_type_ids[indices[row]])
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": torch.from_numpy(split.labels[indices]),
    }
    if split.teacher_logits is not None:
        batch["teacher_logits"] = torch.from_numpy(split.teacher_logits[indices])
    return batch


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within pools, then shuffle the batches."""
    order = rng.permutation(len(lengths))
    pool = batch_size * LENGTH_POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sequential_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches sorted by length (predictions are put back in input order by the caller)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict(
    model: PreTrainedModel, split: EncodedSplit, batch_size: int, pad_id: int, progress: str | None = None
) -> tuple[np.ndarray, float]:
    """Logits for every row in input order, and the mean cross-entropy loss. `progress`: a bar with that
    description (for passes that take minutes, such as a teacher labelling thousands of texts)."""
    model.eval()
    lengths = np.array([len(s) for s in split.input_ids])
    logits = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
    total_loss = 0.0
    batches = sequential_batches(lengths, batch_size)
    if progress:
        batches = tqdm(batches, desc=progress, unit="batch", mininterval=5)
    for indices in batches:
        batch = collate(split, indices, pad_id)
        output = model(**{**model_inputs(batch), "labels": batch["labels"]})
        logits[indices] = output.logits.float().numpy()
        total_loss += float(output.loss) * len(indices)
    return logits, total_loss / len(split)


def evaluate(
    model: PreTrainedModel, split: EncodedSplit, batch_size: int, pad_id: int, tune_threshold: bool = False
) -> dict[str, float]:
    """Loss and the summary classification metrics (per-class ones are logged once, for the shipped model);
    with `tune_threshold` (two classes), also the MCC the model reaches once its decision threshold is tuned
    on this split (what the train step will ship)."""
    logits, loss = predict(model, split, batch_size, pad_id)
    if split.labels.ndim == 2:  # several labels per text
        return {"loss": loss, **multilabel_head.validation_metrics(split.labels, logits)}
    summary = classification_metrics(split.labels, logits.argmax(axis=1), logits.shape[1], per_class=False)
    metrics = {"loss": loss, **summary}
    if tune_threshold:
        metrics["mcc_tuned_threshold"] = best_margin_shift(split.labels, logits)[2]
    return metrics


_LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight")


def parameter_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, num_layers + 1 for pooler and classifier head."""
    if "embeddings." in name:
        return 0
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def optimizer_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW parameter groups: no weight decay on biases and LayerNorm weights, and layer-wise LR decay.

    With `layer_lr_decay` d < 1, a parameter at depth k of n + 1 gets learning_rate * d ** (n + 1 - k): the
    head learns at the full rate, the embeddings slowest, so fine-tuning keeps what pretraining put in the
    lower layers (Clark et al., ELECTRA; Sun et al., "How to fine-tune BERT").
    """
    num_layers = model.config.num_hidden_layers
    grouped: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        key = (parameter_depth(name, num_layers), name.endswith(_NO_DECAY))
        grouped.setdefault(key, []).append(parameter)
    return [
        {
            "params": parameters,
            "lr": config.learning_rate * config.layer_lr_decay ** (num_layers + 1 - depth),
            "weight_decay": 0.0 if no_decay else config.weight_decay,
        }
        for (depth, no_decay), parameters in sorted(grouped.items())
    ]


class WeightAverage:
    """Exponential moving average of the trainable weights, updated after every optimizer step.

    Validation, checkpoint selection and export use the average: it smooths the step-to-step noise of
    small-batch fine-tuning, which on a data set of CoLA's size otherwise shows up as validation MCC
    swinging by several points from one epoch to the next. Measured on CoLA (README, recipe table) it did
    not raise test MCC, so `ema_decay` is off by default.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - self.decay)

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self):
        """The model holds the averaged weights inside the block and its own ones again after it."""
        live = [p.detach().clone() for p in self.parameters]
        torch._foreach_copy_(self.parameters, self.average)
        try:
            yield
        finally:
            torch._foreach_copy_(self.parameters, live)


def train(
    model: PreTrainedModel,
    train_split: EncodedSplit,
    validation_split: EncodedSplit,
    config: TrainConfig,
    pad_id: int,
    log_epoch,
) -> dict:
    """Fine-tune with early stopping on validation MCC (at the tuned threshold when
    `config.tune_threshold`); the best epoch's weights are restored at the end (`config.select_epoch`
    False: every epoch runs and the last is kept).

    `log_epoch(epoch, metrics)` receives each epoch's metrics. Returns a summary of the run.
    """
    rng = np.random.default_rng(config.seed)
    lengths = np.array([len(s) for s in train_split.input_ids])
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    # The fused kernel (CPU and GPU) is what Trainer uses too; it is measurably faster than foreach.
    optimizer = torch.optim.AdamW(optimizer_groups(model, config), lr=config.learning_rate, fused=True)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )

    # The passes over each batch (fp32 on the model, or bf16 on a copy of it): the optimizer, clipping,
    # the weight average and validation always see the model's own fp32 weights.
    steps = training_steps(model, config.precision, config.loss_fn)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
    best = {"mcc": -math.inf, "epoch": 0, "state": None}
    epochs_without_gain = 0
    samples_seen, train_seconds = 0, 0.0
    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        running_loss = 0.0
        batches = length_grouped_batches(lengths, config.batch_size, rng)
        progress = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", mininterval=5)
        for indices in progress:
            loss = steps.loss(collate(train_split, indices, pad_id))
            clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            steps.weights_updated()
            if average is not None:
                average.update()
            loss_value = loss.item()
            running_loss += loss_value * len(indices)
            # refresh=False: the bar redraws at most every `mininterval`, not once per batch in the log.
            progress.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        epoch_seconds = time.perf_counter() - started
        samples_seen += len(train_split)
        train_seconds += epoch_seconds
        with average.applied() if average is not None else contextlib.nullcontext():
            validation = evaluate(
                model, validation_split, config.batch_size * 2, pad_id, config.tune_threshold
            )
            score = validation[multilabel_head.selection_key(validation, config.tune_threshold)]
            metrics = {
                "train_loss": running_loss / len(train_split),
                "train_samples_per_second": len(train_split) / epoch_seconds,
                **{f"val_{key}": value for key, value in validation.items()},
            }
            log_epoch(epoch, metrics)
            if score > best["mcc"] if config.select_epoch else epoch == config.epochs:
                best = {"mcc": score, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        if "mcc" not in validation:  # several labels per text
            multilabel_head.log_epoch(epoch, metrics["train_loss"], validation)
        else:
            logger.info(
                "epoch %d: train_loss %.4f val_loss %.4f val_acc %.4f val_mcc %.4f%s (%.0f samples/s)",
                epoch,
                metrics["train_loss"],
                validation["loss"],
                validation["accuracy"],
                validation["mcc"],
                f" ({score:.4f} at the tuned threshold)" if config.tune_threshold else "",
                metrics["train_samples_per_second"],
            )
        if best["epoch"] == epoch:
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
            if config.select_epoch and epochs_without_gain >= config.patience:
                logger.info(
                    "early stop after epoch %d: no validation MCC gain for %d epoch(s)",
                    epoch,
                    config.patience,
                )
                break
    model.load_state_dict(best["state"])
    model.eval()
    return {
        "best_epoch": best["epoch"],
        multilabel_head.best_key(validation_split): best["mcc"],
        "epochs_run": epoch,
        # Not `train_samples_per_second`: that name holds the per-epoch series, whose last step would hide it.
        "mean_train_samples_per_second": samples_seen / train_seconds,
    }
