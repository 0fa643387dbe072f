"""The distillation teacher's cost against the student's, on CoLA, in one process on the same rows: training
samples/s (the train step's loop and precision switch, a few batches after two warm-up ones), inference
samples/s, and, with `--subset N`, one epoch of fine-tuning on N training rows for each model and its MCC on
CoLA's in-domain dev file (the pipeline's test rows for the shipped CoLA). docs/benchmarks.md,
"Distillation from a teacher".

Usage: python bench/teacher.py [--teacher mpnet] [--batches 20] [--precision auto] [--subset 0]
"""

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch
from transformers import AutoConfig, AutoTokenizer

from sentclf.backbone import resolve_backbone
from sentclf.metrics import matthews_corrcoef
from sentclf.teacher_weights import MPNET, mpnet_dir

import benchlib

benchlib.use_steps("train")
from modeling import build_classifier  # noqa: E402
from precision import resolve_precision, training_steps  # noqa: E402
from training import EncodedSplit, TrainConfig, collate, length_grouped_batches, predict, train  # noqa: E402

COLA = benchlib.REPO_ROOT / "preprocess" / "data" / "cola"


def read(name: str) -> pd.DataFrame:
    return pd.read_csv(COLA / name, sep="\t", header=None, names=["source", "label", "mark", "text"])


def encoded(frame: pd.DataFrame, tokenizer) -> EncodedSplit:
    ids = tokenizer(frame.text.tolist(), truncation=True, max_length=64)["input_ids"]
    return EncodedSplit(ids, frame.label.to_numpy(np.int64), frame.text.tolist())


def model_for(source: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(source, num_labels=2)
    return build_classifier(source, config, "mean")


def throughput(
    source: str, tokenizer, frame: pd.DataFrame, batches: int, precision: str
) -> tuple[float, float]:
    """Training and inference samples/s."""
    split, model = encoded(frame, tokenizer), model_for(source)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    steps = training_steps(model, precision)
    order = length_grouped_batches(np.array([len(s) for s in split.input_ids]), 32, np.random.default_rng(0))
    seen, started = 0, 0.0
    for index, rows in enumerate(order[: batches + 2]):
        if index == 2:  # two warm-up batches
            started = time.perf_counter()
        steps.loss(collate(split, rows, tokenizer.pad_token_id))
        optimizer.step()
        optimizer.zero_grad()
        steps.weights_updated()
        seen += len(rows) if index >= 2 else 0
    train_rate = seen / (time.perf_counter() - started)
    rows = min(512, len(split))
    head = EncodedSplit(split.input_ids[:rows], split.labels[:rows], split.texts[:rows])
    started = time.perf_counter()
    predict(model, head, 64, tokenizer.pad_token_id)
    return train_rate, rows / (time.perf_counter() - started)


def subset_mcc(
    source: str, tokenizer, train_frame, test_frame, precision: str, lr: float
) -> tuple[float, float]:
    """One epoch on the subset (the train step's loop, validation on the dev file): its MCC and seconds."""
    model = model_for(source)
    train_split, test_split = encoded(train_frame, tokenizer), encoded(test_frame, tokenizer)
    config = TrainConfig(epochs=1, batch_size=32, learning_rate=lr, max_seq_length=64, seed=42, patience=1,
                         warmup_ratio=0.1, weight_decay=0.01, precision=precision)  # fmt: skip
    started = time.perf_counter()
    train(model, train_split, test_split, config, tokenizer.pad_token_id, lambda epoch, metrics: None)
    seconds = time.perf_counter() - started
    logits, _ = predict(model, test_split, 64, tokenizer.pad_token_id)
    return matthews_corrcoef(test_split.labels, logits.argmax(axis=1)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--teacher", default=MPNET, help="`mpnet` or a local Hugging Face folder")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--subset", type=int, default=0, help="training rows of the one-epoch MCC (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("TORCH_NUM_THREADS", os.cpu_count() or 1)))
    print(benchlib.cpu_line())
    precision = resolve_precision(args.precision)
    print(f"precision {precision}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    sources = {
        "teacher": str(mpnet_dir()) if args.teacher == MPNET else args.teacher,
        "student": resolve_backbone("bundled"),
    }
    train_frame, test_frame = read("in_domain_train.tsv"), read("in_domain_dev.tsv")
    rates = {}
    for name, source in sources.items():
        tokenizer = AutoTokenizer.from_pretrained(source)
        rates[name] = throughput(source, tokenizer, train_frame, args.batches, precision)
        print(f"{name}: train {rates[name][0]:.2f} samples/s, inference {rates[name][1]:.2f} samples/s")
    print(f"teacher_train_epoch_min_per_1000_rows={1000 / rates['teacher'][0] / 60:.2f} "
          f"student_over_teacher_train={rates['student'][0] / rates['teacher'][0]:.2f}")  # fmt: skip
    if args.subset:
        subset = train_frame.sample(n=args.subset, random_state=42)
        for name, lr in (("teacher", 3e-5), ("student", 2e-4)):
            tokenizer = AutoTokenizer.from_pretrained(sources[name])
            mcc, seconds = subset_mcc(sources[name], tokenizer, subset, test_frame, precision, lr)
            print(f"{name}: one epoch on {args.subset} rows: dev MCC {mcc:.4f} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
