"""The labelling loop measured (issue #37, part 3): rounds of N labels chosen by the selection command's
logic (tools/label_next.py: uncertainty margin + MMR diversity, sentclf.label_selection) against N chosen
at random, from the same start, scored on the same test rows: the figures on docs/benchmarks.md ("Few
labels").

    python bench/labelling_rounds.py ~/sentclf-examples/trec-8 --text-column question \
        --label-column answer_type --pair-budget 0 --repeats 3 --weights 0.5 1.0 0.0

(the figures' command: the head-only variant, three random draws, label_next's default weight and the two
extremes; without --pair-budget 0 each training runs the contrastive phase, see Cost below).

The folder is what examples/few_labels.py writes: data/train.csv (N rows per class, seeded), data/test.csv
and pool-labels.csv (the rest of the training file, the labels held back: an arm sees a pool row's label
only once it has picked it, as the person labelling a batch would give it). Per round and arm: the model is
retrained on the arm's labelled rows as the train step would (the few-shot recipe of train/few_shot.py
while the rarest class has fewer than its threshold of rows, `-P few_shot=auto`; the ordinary fine-tune
with the pipeline's defaults above it), every labelled row trained on (the step's cross-validation only
gives validation figures, not another model). The chosen arm scores the pool with its latest model
(probabilities and the input of its final linear layer, the vectors label_next reads from a version) and
picks with sentclf.label_selection; the random arm draws uniformly, seeded. Accuracy after each round with
a 95% bootstrap interval over the test rows; after the last round the paired difference chosen - random,
bootstrapped over the same resampled test rows. Pool rows whose sentence (case- and whitespace-
insensitively) is a test or starting row are dropped first.

Cost: the contrastive phase dominates (a few pairs per second on an idle 2-core machine, under one on a
loaded one), and SetFit's 20 pair iterations over ~200 rows take hours per model there; --pair-budget caps
the pairs per training (iterations = max(1, budget // (2 * rows))), the same for both arms. --pair-budget 0
skips the contrastive phase: the recipe's head (few_shot.fit_head) on the untuned backbone, whose pool and
test vectors are then computed once; the figure says which was run.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoConfig, AutoTokenizer

from sentclf.backbone import resolve_backbone
from sentclf.label_selection import BALANCE_CHOICES, DEFAULT_BALANCE, predicted_classes, select, uncertainty
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN

import benchlib

benchlib.use_steps("train")
import few_shot  # noqa: E402
from modeling import build_classifier  # noqa: E402
from training import EncodedSplit, TrainConfig, encode_split, predict, sequential_batches, train  # noqa: E402

ARMS = ("chosen", "random")
BATCH = 16
PREDICT_BATCH = 64
MAX_SEQ_LENGTH = 64


def sentence_key(text: str) -> str:
    """As preprocess and label_next compare sentences: case- and whitespace-insensitively."""
    return " ".join(text.split()).casefold()


def clean_pool(pool: pd.DataFrame, taken: list[str]) -> pd.DataFrame:
    """The pool without the rows whose sentence is already a test or starting row (no test row can be
    picked and trained on)."""
    keys = {sentence_key(t) for t in taken}
    kept = pool[~pool[TEXT_COLUMN].map(sentence_key).isin(keys)]
    return kept.drop_duplicates(TEXT_COLUMN).reset_index(drop=True)


def pair_iterations(rows: int, budget: int) -> int:
    """SetFit's pair iterations for `rows` labelled rows under a budget of pairs (each iteration draws two
    pairs per row); at least one."""
    return max(1, budget // (2 * rows))


def draw_random(available: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` pool rows drawn uniformly from the available ones."""
    if count > len(available):
        raise ValueError(f"asked for {count} rows but only {len(available)} remain in the pool")
    return np.sort(rng.choice(available, count, replace=False))


def draw_chosen(
    probabilities: np.ndarray,
    vectors: np.ndarray,
    available: np.ndarray,
    count: int,
    weight: float,
    balance: str = "none",
) -> np.ndarray:
    """`count` pool rows picked by the selection command's logic among the available ones (the model's
    probabilities and vectors are over the whole pool); `balance="predicted"`: the predicted classes
    take turns, as label_next's --balance predicted."""
    if count > len(available):
        raise ValueError(f"asked for {count} rows but only {len(available)} remain in the pool")
    shown = probabilities[available]
    picks = select(vectors[available], uncertainty(shown), count, weight, predicted_classes(shown, balance))
    return available[picks]


def bootstrap_accuracy(correct: np.ndarray, resamples: np.ndarray) -> tuple[float, float, float]:
    """Accuracy and its 95% percentile interval over the resampled test rows ([resamples, rows] indices)."""
    means = correct[resamples].mean(axis=1)
    return float(correct.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def paired_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, resamples: np.ndarray
) -> tuple[float, float, float]:
    """Accuracy of a minus b and its 95% interval, both resampled on the same test rows (paired)."""
    return bootstrap_accuracy(correct_a.astype(float) - correct_b.astype(float), resamples)


@dataclass
class Arm:
    """One arm of the loop: the pool rows it has had labelled so far, round by round."""

    name: str
    picked: list[np.ndarray] = field(default_factory=list)

    def rows(self) -> np.ndarray:
        return np.concatenate(self.picked) if self.picked else np.zeros(0, dtype=int)


# fit(pool rows labelled so far) -> model; score(model) -> correct flags on the test rows;
# pick(arm name, model, available pool rows, count) -> pool rows.
Fit = Callable[[np.ndarray], object]
Score = Callable[[object], np.ndarray]
Pick = Callable[[str, object, np.ndarray, int], np.ndarray]


def run_rounds(
    pool_size: int, rounds: int, count: int, fit: Fit, score: Score, pick: Pick, report=print
) -> dict[str, list[np.ndarray]]:
    """Round 0 (the starting rows only, shared by both arms), then per round and arm: pick `count` rows
    the arm has not had yet with the arm's latest model, retrain on the start plus every row picked, score.
    The correct flags per arm, round 0 first."""
    start = fit(np.zeros(0, dtype=int))
    first = score(start)
    report("round 0", {arm: first for arm in ARMS})
    arms = {name: Arm(name) for name in ARMS}
    models = {name: start for name in ARMS}
    results = {name: [first] for name in ARMS}
    for number in range(1, rounds + 1):
        flags = {}
        for name, arm in arms.items():
            available = np.setdiff1d(np.arange(pool_size), arm.rows())
            arm.picked.append(np.asarray(pick(name, models[name], available, count)))
            models[name] = fit(arm.rows())
            flags[name] = score(models[name])
            results[name].append(flags[name])
        report(f"round {number}", flags)
    return results


def encode(frame: pd.DataFrame, tokenizer, names: list[str]) -> EncodedSplit:
    frame = frame.assign(**{LABEL_COLUMN: frame[LABEL_COLUMN].map({n: i for i, n in enumerate(names)})})
    return encode_split(frame, tokenizer, MAX_SEQ_LENGTH)


@torch.inference_mode()
def probabilities_and_vectors(model, split: EncodedSplit, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and the input of the final linear layer (the vectors label_next reads from a
    version's files), in input order."""
    captured = []
    handle = model.classifier.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        logits, _ = predict(model, split, PREDICT_BATCH, pad_id)
    finally:
        handle.remove()
    order = np.concatenate(sequential_batches(np.array([len(s) for s in split.input_ids]), PREDICT_BATCH))
    vectors = np.empty((len(split), captured[0].shape[1]), dtype=np.float32)
    vectors[order] = torch.cat(captured).float().numpy()
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy(), vectors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="examples/few_labels.py's --out")
    parser.add_argument("--text-column", required=True)
    parser.add_argument("--label-column", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=50, help="labels per round and arm")
    parser.add_argument("--pair-budget", type=int, default=400, help="contrastive pairs per training")
    parser.add_argument(
        "--weights", type=float, nargs="+", default=[0.5], help="label_next's --uncertainty-weight(s)"
    )
    parser.add_argument(
        "--balance",
        nargs="+",
        choices=BALANCE_CHOICES,
        default=[DEFAULT_BALANCE],
        help="label_next's --balance value(s): `predicted` gives each predicted class its turn",
    )
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=1, help="the loop again with other random draws")
    args = parser.parse_args()
    columns = {args.text_column: TEXT_COLUMN, args.label_column: LABEL_COLUMN}

    def read(path: Path) -> pd.DataFrame:
        return pd.read_csv(path, dtype=str, keep_default_na=False).rename(columns=columns)

    start, test = read(args.folder / "data" / "train.csv"), read(args.folder / "data" / "test.csv")
    pool = clean_pool(read(args.folder / "pool-labels.csv"), [*test[TEXT_COLUMN], *start[TEXT_COLUMN]])
    names = sorted(start[LABEL_COLUMN].unique())
    source = resolve_backbone("bundled")
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = AutoConfig.from_pretrained(source, num_labels=len(names))
    pad = tokenizer.pad_token_id
    start_split, test_split = encode(start, tokenizer, names), encode(test, tokenizer, names)
    pool_split = encode(pool, tokenizer, names)
    print(benchlib.cpu_line())
    print(
        f"{len(start)} starting rows ({len(names)} classes), {len(pool)} in the pool, {len(test)} test rows; "
        f"{args.rounds} rounds of {args.count} per arm; "
        + (f"at most {args.pair_budget} pairs a few-shot training" if args.pair_budget else "head only")
    )

    def labelled(rows: np.ndarray) -> EncodedSplit:
        split = few_shot.subset(pool_split, rows)
        return EncodedSplit(
            start_split.input_ids + split.input_ids,
            np.concatenate([start_split.labels, split.labels]),
            start_split.texts + split.texts,
        )

    def fit(rows: np.ndarray):
        merged = labelled(rows)
        counts = np.bincount(merged.labels, minlength=len(names))
        started = time.perf_counter()
        if few_shot.use_few_shot("auto", counts, few_shot.DEFAULT_THRESHOLD):
            iterations = pair_iterations(len(merged), args.pair_budget)
            model, summary = few_shot.train_one(source, config, merged, BATCH, args.seed, pad, iterations)
            how = f"few-shot, {summary['contrastive_pairs']} pairs"
        else:
            torch.manual_seed(args.seed)
            model = build_classifier(source, config, "mean")
            recipe = TrainConfig(5, 32, 2e-4, MAX_SEQ_LENGTH, args.seed, 99, 0.1, 0.01, layer_lr_decay=0.8)
            train(model, merged, merged, recipe, pad, lambda epoch, metrics: None)
            how = "fine-tune"
        print(
            f"  trained on {len(merged)} rows (rarest class {counts.min()}): {how}, "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        return model

    def score(model) -> np.ndarray:
        logits, _ = predict(model, test_split, PREDICT_BATCH, pad)
        return logits.argmax(1) == test_split.labels

    def scored_pool(model) -> tuple[np.ndarray, np.ndarray]:
        return probabilities_and_vectors(model, pool_split, pad)

    if args.pair_budget == 0:  # the head on the untuned backbone: one body, its vectors computed once
        torch.manual_seed(args.seed)
        body = few_shot.FewShotClassifier(source, config)
        started = time.perf_counter()
        pool_vectors, test_vectors = (few_shot.embeddings(body, s, pad) for s in (pool_split, test_split))
        print(f"  pool and test rows embedded once: {time.perf_counter() - started:.0f} s", flush=True)

        def fit(rows: np.ndarray):  # noqa: F811 (the head-only variant)
            merged = labelled(rows)
            print(f"  labelled rows per class: {np.bincount(merged.labels, minlength=len(names)).tolist()}")
            few_shot.fit_head(body, merged, len(names), args.seed, pad)
            return (
                body.classifier.weight.detach().numpy().copy(),
                body.classifier.bias.detach().numpy().copy(),
            )

        def score(model) -> np.ndarray:  # noqa: F811
            weight, bias = model
            return (test_vectors @ weight.T + bias).argmax(1) == test_split.labels

        def scored_pool(model) -> tuple[np.ndarray, np.ndarray]:  # noqa: F811
            weight, bias = model
            logits = torch.from_numpy(pool_vectors @ weight.T + bias)
            return torch.softmax(logits, dim=1).numpy(), pool_vectors

    rng = np.random.default_rng(args.seed)  # redrawn per repeat

    def pick(arm: str, model, available: np.ndarray, count: int) -> np.ndarray:
        if arm == "random":
            return draw_random(available, count, rng)
        probabilities, vectors = scored_pool(model)
        return draw_chosen(probabilities, vectors, available, count, mix, balance)

    resamples = np.random.default_rng(args.seed + 1).integers(0, len(test), size=(args.resamples, len(test)))

    def report(label: str, flags: dict[str, np.ndarray]) -> None:
        for arm, correct in flags.items():
            accuracy, low, high = bootstrap_accuracy(correct, resamples)
            print(f"{label} {arm}: accuracy {accuracy:.4f} [{low:.4f}, {high:.4f}]", flush=True)

    print(f"classes: {names}")
    for mix, balance, repeat in itertools.product(args.weights, args.balance, range(args.repeats)):
        if repeat == 0:
            differences = []
        rng = np.random.default_rng(args.seed + repeat)
        started = time.perf_counter()
        print(
            f"uncertainty weight {mix}, balance {balance}, repeat {repeat + 1}/{args.repeats} "
            f"(random seed {args.seed + repeat})"
        )
        results = run_rounds(len(pool), args.rounds, args.count, fit, score, pick, report)
        diff, low, high = paired_difference(results["chosen"][-1], results["random"][-1], resamples)
        differences.append(diff)
        print(
            f"after round {args.rounds}: chosen - random = {diff:+.4f} [{low:+.4f}, {high:+.4f}] "
            f"(paired bootstrap, {args.resamples} resamples of the {len(test)} test rows); "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        if repeat == args.repeats - 1 and args.repeats > 1:
            shown = ", ".join(f"{d:+.4f}" for d in differences)
            print(f"weight {mix}, balance {balance}: chosen - random over {args.repeats} draws: {shown}")


if __name__ == "__main__":
    main()
