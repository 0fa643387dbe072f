"""Does self-training lift a few-shot teacher? Issue #37's TREC goal (8 labelled rows per class reaching 90%
of the full-data model's accuracy) stops at 0.845 through the pipeline's few-shot teacher and its pool of
unlabelled questions: the student (0.797) is bounded by its teacher (0.780). This measures one lever before
it is built into the train step: the teacher fine-tuned on its own labels of the pool.

The rows are the pipeline's: what examples/few_labels.py writes (data/train.csv with N rows per class,
data/test.csv, pool.txt), one labelled row per class held out for validation (as preprocess holds it out,
seeded here). Round 0 is the pipeline's few-shot teacher (train/few_shot.py on the teacher's encoder, the
training rows only, as train/distill.py trains it). Round r >= 1 fine-tunes the previous round's teacher
end to end (train/training.py's loop, the teacher's learning rate) on the labelled training rows and every
pool text labelled with the previous round's most likely class. After each round: the teacher's test
accuracy with a 95% bootstrap interval, paired against round 0, and the round's seconds.

    python bench/self_training.py ~/sentclf-examples/trec-8 --text-column question --label-column answer_type

The last line reads `round0_accuracy=<a> last_accuracy=<b> last_minus_round0=<d> [<lo>, <hi>]`.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from sentclf.bootstrap import resample_indices
from sentclf.schema import LABEL_COLUMN
from sentclf.teacher_weights import mpnet_dir

import benchlib

benchlib.use_steps("train")
import few_shot  # noqa: E402
from precision import resolve_precision  # noqa: E402
from training import EncodedSplit, TrainConfig, encode_split, predict, train  # noqa: E402

MAX_SEQ_LENGTH = 64
RESAMPLES = 2000


def pseudo_labelled(split: EncodedSplit, pool: EncodedSplit, logits: np.ndarray) -> EncodedSplit:
    """The labelled rows and the pool, each pool text with the teacher's most likely class."""
    return few_shot.joined(split, EncodedSplit(pool.input_ids, logits.argmax(axis=1), pool.texts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="what examples/few_labels.py wrote (data/, pool.txt)")
    parser.add_argument("--text-column", required=True)
    parser.add_argument("--label-column", required=True)
    parser.add_argument("--rounds", type=int, default=2, help="self-training rounds after the few-shot one")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each self-training round")
    parser.add_argument(
        "--learning-rate", type=float, default=3e-5, help="the teacher's (teacher_learning_rate)"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    print(benchlib.cpu_line())
    source = str(mpnet_dir())
    frames = benchlib.labelled_frames(args.folder, args.text_column, args.label_column, args.seed)
    pool_texts = [
        line.strip() for line in (args.folder / "pool.txt").read_text().splitlines() if line.strip()
    ]
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = AutoConfig.from_pretrained(source, num_labels=int(frames["train"][LABEL_COLUMN].max()) + 1)
    splits = {name: encode_split(frame, tokenizer, MAX_SEQ_LENGTH) for name, frame in frames.items()}
    pool_ids = tokenizer(pool_texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
    pool = EncodedSplit(pool_ids, np.zeros(len(pool_ids), np.int64), pool_texts)
    pad, precision = tokenizer.pad_token_id, resolve_precision("auto")
    print(
        f"{len(splits['train'])} training rows, {len(splits['validation'])} validation, {len(pool)} pool "
        f"texts, {len(splits['test'])} test rows; teacher {source}, {precision}"
    )
    test = splits["test"]
    draws = resample_indices(len(test), RESAMPLES, args.seed)
    started = time.perf_counter()
    model, summary = few_shot.train_one(source, config, splits["train"], 32, args.seed, pad)
    correct = []
    for round_ in range(args.rounds + 1):
        if round_:
            started = time.perf_counter()
            logits, _ = predict(model, pool, 64, pad, progress=f"round {round_}: labelling the pool")
            recipe = TrainConfig(args.epochs, 32, args.learning_rate, MAX_SEQ_LENGTH, args.seed, args.epochs,
                                 0.1, 0.01, precision=precision)  # fmt: skip
            train(model, pseudo_labelled(splits["train"], pool, logits), splits["validation"], recipe, pad,
                  lambda epoch, metrics: print(f"  epoch {epoch}: {metrics}"))  # fmt: skip
        seconds = time.perf_counter() - started
        test_logits, _ = predict(model, test, 64, pad)
        correct.append((test_logits.argmax(axis=1) == test.labels).astype(float))
        low, high = np.percentile(correct[-1][draws].mean(axis=1), [2.5, 97.5])
        line = f"round {round_}: teacher test accuracy {correct[-1].mean():.4f} [{low:.4f}, {high:.4f}]"
        if round_:
            diff = correct[-1] - correct[0]
            d_low, d_high = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
            line += f", minus round 0 {diff.mean():+.4f} [{d_low:+.4f}, {d_high:+.4f}]"
        print(f"{line}; {seconds:.0f} s", flush=True)
    diff = correct[-1] - correct[0]
    d_low, d_high = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
    print(
        f"round0_accuracy={correct[0].mean():.4f} last_accuracy={correct[-1].mean():.4f} "
        f"last_minus_round0={diff.mean():+.4f} [{d_low:+.4f}, {d_high:+.4f}]"
    )


if __name__ == "__main__":
    torch.set_num_threads(benchlib.CORES)
    main()
