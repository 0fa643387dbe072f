"""Few-label training (SetFit's recipe): contrastive fine-tuning of the backbone on sentence pairs drawn
from the few labelled rows, then a logistic-regression head on the tuned embeddings, folded into the
model's linear layer.

Why: with a handful of rows per class, fine-tuning the whole network with cross-entropy mostly learns
noise, and a validation split of one row per class selects epochs at random. A sentence-embedding backbone
(all-MiniLM-L6-v2 was trained contrastively) learns far more from pairs: n labelled rows make O(n^2)
same-class / other-class pairs, and the head then only has to draw lines between well-separated clusters
(Tunstall et al., "Efficient Few-Shot Learning Without Prompts", 2022).

Why not the `setfit` package itself: setfit 1.2.0 supports transformers 5, but imports the `evaluate`
package (a name this repository's evaluate/ step shadows) and sentence-transformers' [train] extra
(accelerate); neither is in the step image. The recipe is small: the pairs are drawn as SetFit draws them,
the loss is sentence-transformers' CosineSimilarityLoss, the head scikit-learn's LogisticRegression.

The result is the same model the ordinary fine-tune exports (train.modeling.MeanPoolingClassifier: token
ids -> logits), with an L2 normalisation before the linear layer, as SetFit's head reads normalised
embeddings: ONNX, pyfunc, serving config, building and serving do not change.

Validation: the preprocess run's validation split when it has one (a model trained on the training rows
alone scores it); when it has none (too few rows to hold any out, preprocess leaves it empty), stratified
k-fold cross-validation: the recipe is run per fold and the out-of-fold predictions are the validation
figures. Either way the shipped model is then trained on every labelled row, the validation split's too:
the recipe selects nothing on validation (no epochs, no threshold), and with eight rows per class the one
held out is an eighth of what the model could learn from. A few-shot teacher is not trained again on
them: measured on TREC with 8 rows per class, that doubled its cost (283 s to 641 s) for a teacher 0.008
more accurate and a student no better (docs/benchmarks.md, Few labels).
"""

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PretrainedConfig, get_linear_schedule_with_warmup

from sentclf.contract import FEW_SHOT_MIN_ROWS_PER_CLASS

from modeling import MeanPoolingClassifier
from training import EncodedSplit, collate, sequential_batches

logger = logging.getLogger(__name__)

FEW_SHOT_CHOICES = ("auto", "true", "false")
# `auto` trains few-shot below this many labelled rows in the rarest class. SetFit's gains over a full
# fine-tune are largest at 8-16 rows per class and fade by ~64; at 32 both are close, and below it the
# fine-tune's validation split is too small to select an epoch on.
DEFAULT_THRESHOLD = 32
# SetFit's defaults: 20 pair-sampling iterations (each row is the anchor of one positive and one negative
# pair per iteration), one epoch over the pairs, a body learning rate of 2e-5.
PAIR_ITERATIONS = 20
BODY_LEARNING_RATE = 2e-5
CONTRASTIVE_EPOCHS = 1
WARMUP_RATIO = 0.1
LOG_EVERY_STEPS = 25
# Cross-validation folds when there is no validation split (capped by the rarest class's rows).
CV_FOLDS = 4
# The fewest training rows per class few-shot accepts: a positive pair needs two rows of a class.
MIN_ROWS_PER_CLASS = FEW_SHOT_MIN_ROWS_PER_CLASS
# A few-shot teacher's labels of unlabelled text (self_trained_logits): the head is refit on the labelled
# rows and the most confident share of each class the previous head predicts, until no label changes (at
# most this many refits). Measured on TREC with 8 rows per class: pool labels 0.754 -> 0.839 right; the
# share of every class, not of the whole pool, and the classes weighted equally, because the classes the
# first head under-predicts are its least confident ones (docs/few-labels.md).
SELF_TRAINING_MAX_ROUNDS = 20
SELF_TRAINING_SHARE = 0.5


def use_few_shot(mode: str, rows_per_class: np.ndarray, threshold: int) -> bool:
    """Whether to train few-shot: `true`/`false` as asked; `auto` when the rarest class has fewer than
    `threshold` training rows."""
    if mode == "auto":
        return int(rows_per_class.min()) < threshold
    return mode == "true"


class FewShotClassifier(MeanPoolingClassifier):
    """Encoder -> masked mean -> L2 normalisation -> linear: the sentence embedding SetFit tunes, and the
    logistic head fitted on it as the linear layer (its softmax is the head's predict_proba)."""

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=1)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = self.classifier(self.embed(input_ids, attention_mask, token_type_ids))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class _Embedder(nn.Module):
    """What sentence-transformers' losses call: features in, {"sentence_embedding": ...} out."""

    def __init__(self, model: FewShotClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"sentence_embedding": self.model.embed(**features)}


def sample_pairs(labels: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """[pairs, 3] (row a, row b, 1.0 same class / 0.0 other class), as SetFit's `sample_pairs` draws them:
    per iteration, each row anchors one positive and one negative pair."""
    by_class = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    others = {label: np.flatnonzero(labels != label) for label in by_class}
    pairs = []
    for _ in range(iterations):
        for anchor, label in enumerate(labels):
            same = by_class[label][by_class[label] != anchor]
            if len(same):
                pairs.append((anchor, rng.choice(same), 1.0))
            if len(others[label]):
                pairs.append((anchor, rng.choice(others[label]), 0.0))
    return np.asarray(pairs, dtype=np.float64)


def _features(split: EncodedSplit, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    batch = collate(split, rows, pad_id)
    return {name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids")}


def contrastive_fit(
    model: FewShotClassifier,
    split: EncodedSplit,
    batch_size: int,
    seed: int,
    pad_id: int,
    log_step=None,
    iterations: int = PAIR_ITERATIONS,
) -> dict[str, float]:
    """Tune the encoder on pairs of `split`'s rows with the cosine-similarity loss; the summary."""
    # Imported here: sentence-transformers (and the scikit-learn and SciPy it loads) add up to 2 s to
    # every train step's start, and only a few-shot run uses it.
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    rng = np.random.default_rng(seed)
    pairs = sample_pairs(split.labels, iterations, rng)
    pairs = pairs[rng.permutation(len(pairs))]
    loss_fn = CosineSimilarityLoss(_Embedder(model))
    steps = math.ceil(len(pairs) / batch_size) * CONTRASTIVE_EPOCHS
    optimizer = torch.optim.AdamW(model.encoder.parameters(), lr=BODY_LEARNING_RATE)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP_RATIO * steps), steps)
    model.train()
    started, total = time.perf_counter(), 0.0
    for _ in range(CONTRASTIVE_EPOCHS):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            a, b = chunk[:, 0].astype(int), chunk[:, 1].astype(int)
            target = torch.tensor(chunk[:, 2], dtype=torch.float32)
            loss = loss_fn([_features(split, a, pad_id), _features(split, b, pad_id)], target)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total += loss.item() * len(chunk)
            step = start // batch_size + 1
            if step % LOG_EVERY_STEPS == 0:  # a silent phase of minutes reads as a hang in the step's log
                logger.info("contrastive step %d/%d: loss %.4f", step, steps, loss.item())
    model.eval()
    seconds = time.perf_counter() - started
    return {
        "contrastive_pairs": len(pairs),
        "contrastive_loss": total / len(pairs),
        "contrastive_seconds": seconds,
    }


@torch.inference_mode()
def embeddings(
    model: FewShotClassifier,
    split: EncodedSplit,
    pad_id: int,
    batch_size: int = 64,
    progress: str | None = None,
) -> np.ndarray:
    """[rows, hidden] normalised sentence embeddings in input order (`progress`: a bar so described)."""
    model.eval()
    lengths = np.array([len(s) for s in split.input_ids])
    out = np.zeros((len(split), model.config.hidden_size), dtype=np.float32)
    batches = sequential_batches(lengths, batch_size)
    if progress:
        batches = tqdm(batches, desc=progress, unit="batch", mininterval=5)
    for rows in batches:
        out[rows] = model.embed(**_features(split, rows, pad_id)).numpy()
    return out


def fit_head(model: FewShotClassifier, split: EncodedSplit, classes: int, seed: int, pad_id: int) -> None:
    """Fit a logistic regression on the tuned embeddings and write it into the model's linear layer.
    Two classes: sklearn's one weight vector w becomes the logits (-w/2, w/2), whose softmax is its
    sigmoid."""
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(max_iter=1000, random_state=seed)
    head.fit(embeddings(model, split, pad_id), split.labels)
    weight = np.zeros((classes, model.config.hidden_size))
    bias = np.zeros(classes)
    if len(head.classes_) == 2 and head.coef_.shape[0] == 1:
        low, high = head.classes_
        weight[low], weight[high] = -head.coef_[0] / 2, head.coef_[0] / 2
        bias[low], bias[high] = -head.intercept_[0] / 2, head.intercept_[0] / 2
    else:
        weight[head.classes_], bias[head.classes_] = head.coef_, head.intercept_
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight))
        model.classifier.bias.copy_(torch.from_numpy(bias))


def confident_rows(probabilities: np.ndarray, share: float) -> np.ndarray:
    """The most confident `share` (rounded up) of the rows of each class the probabilities predict."""
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    kept = []
    for label in np.unique(predicted):
        rows = np.flatnonzero(predicted == label)
        kept.append(rows[np.argsort(-confidence[rows], kind="stable")][: math.ceil(share * len(rows))])
    return np.sort(np.concatenate(kept))


def self_trained_logits(
    labelled: np.ndarray,
    labels: np.ndarray,
    unlabelled: np.ndarray,
    logits: np.ndarray,
    seed: int,
    max_rounds: int = SELF_TRAINING_MAX_ROUNDS,
    share: float = SELF_TRAINING_SHARE,
) -> tuple[np.ndarray, int]:
    """Better labels for unlabelled rows from their embeddings, and the refits it took: starting from the
    few-shot head's `logits`, a logistic regression is refit on the labelled rows and the confident_rows of
    the unlabelled ones (labelled as the previous head predicts them) until no unlabelled row's label
    changes, at most `max_rounds` times; its log-probabilities are the new logits (their softmax is the
    regression's predict_proba). Classes weigh the same in every refit, as in the labelled rows the first
    head learned from: otherwise a class that head under-predicts has fewer confident rows, so less
    weight, so it is predicted less again. Self-training on the head alone: the embeddings are not tuned
    again, so it costs seconds where a contrastive round on the same rows cost minutes and labelled the
    pool no better (docs/benchmarks.md, Few labels)."""
    from scipy.special import softmax
    from sklearn.linear_model import LogisticRegression

    current, rounds = logits.astype(np.float64), 0
    while rounds < max_rounds:
        probabilities = softmax(current, axis=1)
        rows = confident_rows(probabilities, share)
        head = LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed)
        head.fit(
            np.vstack([labelled, unlabelled[rows]]),
            np.concatenate([labels, probabilities[rows].argmax(axis=1)]),
        )
        # A class the head never saw keeps a probability of about zero (e**-30).
        refit = np.full_like(current, -30.0)
        refit[:, head.classes_] = head.predict_log_proba(unlabelled)
        rounds += 1
        settled = np.array_equal(refit.argmax(axis=1), current.argmax(axis=1))
        current = refit
        if settled:
            break
    return current.astype(np.float32), rounds


@dataclass
class FewShotResult:
    model: FewShotClassifier  # every labelled row's (refit off: the training rows')
    summary: dict[str, float]
    # The rows that stand for validation and their logits from a model that did not train on them: the
    # validation split scored by a model trained on the training rows alone, or (folds > 0, no validation
    # split) the training rows' out-of-fold logits.
    validated: EncodedSplit
    validation_logits: np.ndarray
    folds: int
    trained_rows: int


def train_one(
    source: str,
    config: PretrainedConfig,
    split: EncodedSplit,
    batch_size: int,
    seed: int,
    pad_id: int,
    iterations: int = PAIR_ITERATIONS,
) -> tuple[FewShotClassifier, dict[str, float]]:
    """One run of the recipe on `split`: a fresh backbone, contrastive tuning, the head."""
    torch.manual_seed(seed)
    model = FewShotClassifier(source, config)
    summary = contrastive_fit(model, split, batch_size, seed, pad_id, iterations=iterations)
    fit_head(model, split, config.num_labels, seed, pad_id)
    return model, summary


def joined(first: EncodedSplit, second: EncodedSplit) -> EncodedSplit:
    """The rows of both splits, `first`'s then `second`'s."""
    pairs = None
    if first.token_type_ids is not None and second.token_type_ids is not None:
        pairs = first.token_type_ids + second.token_type_ids
    return EncodedSplit(
        first.input_ids + second.input_ids,
        np.concatenate([first.labels, second.labels]),
        first.texts + second.texts,
        pairs,
    )


def subset(split: EncodedSplit, rows: np.ndarray) -> EncodedSplit:
    pairs = None if split.token_type_ids is None else [split.token_type_ids[i] for i in rows]
    return EncodedSplit(  # a sentence-pair split keeps its segments (collate reads them)
        [split.input_ids[i] for i in rows], split.labels[rows], [split.texts[i] for i in rows], pairs
    )


def cross_validated_logits(
    source: str,
    config: PretrainedConfig,
    split: EncodedSplit,
    batch_size: int,
    seed: int,
    pad_id: int,
    iterations: int = PAIR_ITERATIONS,
) -> tuple[np.ndarray, int]:
    """Out-of-fold logits of every row (stratified k-fold, k = min(CV_FOLDS, the rarest class's rows)),
    and k."""
    from sklearn.model_selection import StratifiedKFold

    from training import predict

    counts = np.bincount(split.labels, minlength=config.num_labels)
    folds = max(2, min(CV_FOLDS, int(counts[counts > 0].min())))
    logits = np.zeros((len(split), config.num_labels), dtype=np.float32)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, held_rows) in enumerate(splitter.split(np.zeros(len(split)), split.labels), 1):
        model, _ = train_one(source, config, subset(split, fit_rows), batch_size, seed, pad_id, iterations)
        logits[held_rows], _ = predict(model, subset(split, held_rows), batch_size * 2, pad_id)
        logger.info("few-shot cross-validation: fold %d/%d done", fold, folds)
    return logits, folds


def fit_few_shot(
    source: str,
    config: PretrainedConfig,
    train_split: EncodedSplit,
    validation_split: EncodedSplit,
    batch_size: int,
    seed: int,
    pad_id: int,
    iterations: int = PAIR_ITERATIONS,
    refit: bool = True,
) -> FewShotResult:
    """The model, and the logits that stand for validation: the validation split scored by a model
    trained on the training rows alone, or without a validation split the out-of-fold logits of
    cross-validation (k runs). The model returned is then trained on every labelled row (one run more);
    with `refit` off (a few-shot teacher, train/distill.py), the one that scored the validation split."""
    from training import predict

    if len(validation_split):
        held_out, summary = train_one(source, config, train_split, batch_size, seed, pad_id, iterations)
        logits, _ = predict(held_out, validation_split, batch_size * 2, pad_id)
        if not refit:
            return FewShotResult(held_out, summary, validation_split, logits, 0, len(train_split))
        validated, folds, every_row = validation_split, 0, joined(train_split, validation_split)
        logger.info(
            "few-shot: validated on %d held-out rows; the shipped model trains on all %d labelled rows",
            len(validation_split),
            len(every_row),
        )
    else:
        logits, folds = cross_validated_logits(
            source, config, train_split, batch_size, seed, pad_id, iterations
        )
        validated, every_row = train_split, train_split
    model, summary = train_one(source, config, every_row, batch_size, seed, pad_id, iterations)
    return FewShotResult(model, summary, validated, logits, folds, len(every_row))
