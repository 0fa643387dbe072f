"""Training-loop speed: this project's loop (train/training.py) vs Hugging Face `Trainer`, side by side in
one run on the same backbone, data, batch size, sequence length and thread count.

Prints samples/s and peak RSS for each; the last line reads `speedup_vs_trainer=<x>`, ours over the
faster of the two Trainer configurations (default random sampler, and group_by_length sampling).
Usage: python bench/train_throughput.py [--samples 1024] [--batch-size 32] [--threads 2]
"""

import argparse
import gc
import os
import resource
import tempfile
import time

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from sentclf.backbone import resolve_backbone
from sentclf.schema import LABEL_COLUMN

import benchlib

# The train step's own loop and the preprocess step's own data, as the steps run them.
training = benchlib.step_module("train", "training")
sources = benchlib.step_module("preprocess", "sources")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_model(source: str, seed: int):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)


def time_ours(source, tokenizer, frame, args) -> float:
    split = training.encode_split(frame, tokenizer, args.max_seq_length)
    tiny_validation = training.encode_split(frame.iloc[:64], tokenizer, args.max_seq_length)
    config = training.TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        learning_rate=5e-5,
        max_seq_length=args.max_seq_length,
        seed=0,
        patience=1,
        warmup_ratio=0.1,
        weight_decay=0.01,
    )
    model = fresh_model(source, 0)
    summary = training.train(model, split, tiny_validation, config, tokenizer.pad_token_id, lambda *_: None)
    return summary["mean_train_samples_per_second"]


class _Rows(torch.utils.data.Dataset):
    def __init__(self, encodings, labels):
        self.encodings, self.labels = encodings, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {
            "input_ids": self.encodings["input_ids"][index],
            "attention_mask": self.encodings["attention_mask"][index],
            "token_type_ids": self.encodings["token_type_ids"][index],
            "labels": int(self.labels[index]),
        }


def time_trainer(source, tokenizer, frame, args, group_by_length: bool) -> float:
    encodings = tokenizer(frame["sentence"].tolist(), truncation=True, max_length=args.max_seq_length)
    dataset = _Rows(encodings, frame[LABEL_COLUMN].to_numpy())
    model = fresh_model(source, 0)
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=1,
            learning_rate=5e-5,
            warmup_steps=0.1,
            weight_decay=0.01,
            max_grad_norm=1.0,
            seed=0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            train_sampling_strategy="group_by_length" if group_by_length else "random",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=dataset,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        started = time.perf_counter()
        trainer.train()
        return len(dataset) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = resolve_backbone("bundled")
    tokenizer = AutoTokenizer.from_pretrained(source)
    frame = sources.load_cola().frames["train"].sample(n=args.samples, random_state=0).reset_index(drop=True)
    frame[LABEL_COLUMN] = frame[LABEL_COLUMN].astype(np.int64)
    print(
        f"backbone all-MiniLM-L6-v2, {args.samples} CoLA rows, batch {args.batch_size}, max length "
        f"{args.max_seq_length}, {args.threads} torch threads, 1 epoch each"
    )

    results = {}
    for name, run in [
        ("trainer (default)", lambda: time_trainer(source, tokenizer, frame, args, False)),
        ("trainer (group_by_length)", lambda: time_trainer(source, tokenizer, frame, args, True)),
        ("ours", lambda: time_ours(source, tokenizer, frame, args)),
    ]:
        gc.collect()
        results[name] = run()
        print(f"{name:<28}{results[name]:>8.1f} samples/s   peak RSS so far {peak_rss_mb():.0f} MB")
    best_trainer = max(results["trainer (default)"], results["trainer (group_by_length)"])
    print(f"speedup_vs_trainer={results['ours'] / best_trainer:.2f}")


if __name__ == "__main__":
    main()
