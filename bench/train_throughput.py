"""Training speed and quality by precision: this project's loop (train/training.py) against Hugging Face
`Trainer`, side by side in one run on the same model (the train step's mean-pooling classifier), recipe (the
train step's defaults), data, seed, batch size, sequence length and thread count.

On every CPU: our loop in fp32 against Trainer in fp32. On a CPU with native bf16 (avx512_bf16 or amx_bf16:
what `precision=auto` trains in there) also our bf16 (a bf16 working copy with fp32 master weights,
train/precision.py) against our fp32 and against Trainer's own `bf16=True` (autocast); without native bf16,
bf16 would be emulated, slower than fp32, so it is not run (`--fp32-only` skips it anywhere).

Prints the CPU model and flags (bf16, vnni, avx2), samples/s (training only, no validation) and peak RSS
for each, the ratios, our fp32 validation MCC, and where bf16 ran, the validation MCC of our two precisions
with a paired bootstrap interval of their difference (the same validation rows, resampled together). The
last line is machine-readable: `native_bf16=<true|false> fp32_over_trainer=<x>`, and where bf16 ran,
`bf16_over_fp32=<x> bf16_over_trainer_bf16=<y> delta_mcc=<d> delta_mcc_low=<l> delta_mcc_high=<h>`.
Usage: python bench/train_throughput.py [--samples 4000] [--epochs 3] [--threads 2] [--fp32-only]
"""

import argparse
import gc
import os
import resource
import tempfile
import time

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

from conductor.parameters import PROJECT_DIR, declared, typed_default
from sentclf.backbone import resolve_backbone
from sentclf.metrics import matthews_corrcoef, mcc_per_resample
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN

import benchlib

# The train step's recipe, read from its MLproject (the single source of its defaults).
RECIPE = {name: typed_default(spec) for name, spec in declared(PROJECT_DIR / "train").items()}

# The train step's own loop, model and precision switch, and the preprocess step's own data.
benchlib.use_steps("train", "preprocess")
import modeling  # noqa: E402
import precision  # noqa: E402
import sources  # noqa: E402
import training  # noqa: E402

RESAMPLES = 2000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, samples_per_second: float) -> None:
    print(f"{name:<20}{samples_per_second:>8.1f} samples/s   peak RSS so far {peak_rss_mb():.0f} MB")


def fresh_model(source: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(source, num_labels=2)
    return modeling.build_classifier(source, config, "mean")


def run_ours(source, tokenizer, train_frame, validation_frame, args, mode: str) -> tuple[float, np.ndarray]:
    """Samples/s of the training loop, and the validation predictions of the best epoch."""
    split = training.encode_split(train_frame, tokenizer, args.max_seq_length)
    validation = training.encode_split(validation_frame, tokenizer, args.max_seq_length)
    config = training.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=RECIPE["learning_rate"],
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        patience=args.epochs,
        warmup_ratio=RECIPE["warmup_ratio"],
        weight_decay=RECIPE["weight_decay"],
        layer_lr_decay=RECIPE["layer_lr_decay"],
        precision=mode,
    )
    model = fresh_model(source, args.seed)
    summary = training.train(model, split, validation, config, tokenizer.pad_token_id, lambda *_: None)
    logits, _ = training.predict(model, validation, args.batch_size * 2, tokenizer.pad_token_id)
    return summary["mean_train_samples_per_second"], logits.argmax(axis=1)


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


def plan(flags: set[str], fp32_only: bool = False) -> list[tuple[str, str, str]]:
    """(name, loop, precision) of each training run, for a CPU with these /proc/cpuinfo flags: fp32 ours
    and Trainer's everywhere; bf16 of both only with native bf16 (emulated, it would only be slower)."""
    runs = [("ours fp32", "ours", "fp32"), ("trainer fp32", "trainer", "fp32")]
    if precision.flags_have_native_bf16(flags) and not fp32_only:
        runs[1:1] = [("ours bf16", "ours", "bf16")]
        runs.append(("trainer bf16", "trainer", "bf16"))
    return runs


def result_line(native_bf16: bool, speed: dict[str, float], delta: tuple[float, float, float] | None) -> str:
    """The machine-readable last line: the ratios of what ran (bf16's only where it ran)."""
    fp32_over_trainer = speed["ours fp32"] / speed["trainer fp32"]
    line = f"native_bf16={str(native_bf16).lower()} fp32_over_trainer={fp32_over_trainer:.2f}"
    if "ours bf16" in speed and delta is not None:
        line += (
            f" bf16_over_fp32={speed['ours bf16'] / speed['ours fp32']:.2f}"
            f" bf16_over_trainer_bf16={speed['ours bf16'] / speed['trainer bf16']:.2f}"
            f" delta_mcc={delta[0]:.4f} delta_mcc_low={delta[1]:.4f} delta_mcc_high={delta[2]:.4f}"
        )
    return line


def run_trainer(source, tokenizer, frame, args, mode: str) -> float:
    """Trainer in fp32 or with bf16=True (`mode`), length-grouped batches (its faster sampler here), no
    evaluation."""
    encodings = tokenizer(frame[TEXT_COLUMN].tolist(), truncation=True, max_length=args.max_seq_length)
    dataset = _Rows(encodings, frame[LABEL_COLUMN].to_numpy())
    model = fresh_model(source, args.seed)
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            learning_rate=RECIPE["learning_rate"],
            warmup_steps=RECIPE["warmup_ratio"],
            weight_decay=RECIPE["weight_decay"],
            max_grad_norm=1.0,
            seed=args.seed,
            bf16=mode == "bf16",
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            train_sampling_strategy="group_by_length",
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
        return len(dataset) * args.epochs / (time.perf_counter() - started)


def paired_delta(labels, first, second, seed) -> tuple[float, float, float]:
    """MCC(second) - MCC(first) on the same rows, and its 95% paired bootstrap interval."""
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(RESAMPLES, len(labels)))
    deltas = mcc_per_resample(labels, second, draws, 2) - mcc_per_resample(labels, first, draws, 2)
    delta = matthews_corrcoef(labels, second, 2) - matthews_corrcoef(labels, first, 2)
    return delta, float(np.quantile(deltas, 0.025)), float(np.quantile(deltas, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=4000, help="training rows")
    parser.add_argument("--validation", type=int, default=1000, help="validation rows (disjoint)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    parser.add_argument("--max-seq-length", type=int, default=RECIPE["max_seq_length"])
    parser.add_argument("--seed", type=int, default=RECIPE["seed"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--fp32-only", action="store_true", help="only the fp32 runs (what a CPU without native bf16 runs)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(benchlib.cpu_line())
    flags = precision.cpu_flags()
    if not precision.cpu_has_native_bf16():  # oneDNN's own check can deny what the flags claim
        flags -= precision.NATIVE_BF16_FLAGS
    native = precision.flags_have_native_bf16(flags)
    runs = plan(flags, args.fp32_only)
    if not native:
        print("no native bf16 here (emulated bf16 is slower than fp32): comparing fp32 with Trainer's fp32")
    source = resolve_backbone("bundled")
    tokenizer = AutoTokenizer.from_pretrained(source)
    rows = sources.load_cola().frames["train"].sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    rows[LABEL_COLUMN] = rows[LABEL_COLUMN].astype(np.int64)
    train_frame = rows.iloc[: args.samples].reset_index(drop=True)
    validation_frame = rows.iloc[args.samples : args.samples + args.validation].reset_index(drop=True)
    print(
        f"backbone all-MiniLM-L6-v2 (mean pooling), {len(train_frame)} CoLA training rows, "
        f"{len(validation_frame)} validation rows, {args.epochs} epoch(s), batch {args.batch_size}, max "
        f"length {args.max_seq_length}, seed {args.seed}, {args.threads} torch threads"
    )

    speed, predictions = {}, {}
    for name, loop, mode in runs:
        gc.collect()
        if loop == "ours":
            speed[name], predictions[name] = run_ours(
                source, tokenizer, train_frame, validation_frame, args, mode
            )
        else:
            speed[name] = run_trainer(source, tokenizer, train_frame, args, mode)
        report(name, speed[name])

    labels = validation_frame[LABEL_COLUMN].to_numpy()
    mcc = {name: matthews_corrcoef(labels, predictions[name], 2) for name in predictions}
    delta = None
    if "ours bf16" in predictions:
        delta = paired_delta(labels, predictions["ours fp32"], predictions["ours bf16"], args.seed)
        agreement = float(np.mean(predictions["ours fp32"] == predictions["ours bf16"]))
        print(
            f"validation MCC: fp32 {mcc['ours fp32']:.4f}, bf16 {mcc['ours bf16']:.4f}; bf16 - fp32 "
            f"{delta[0]:+.4f} [{delta[1]:+.4f}, {delta[2]:+.4f}] (95%, {RESAMPLES} paired resamples); "
            f"label agreement {agreement:.3f}"
        )
    else:
        print(f"validation MCC: fp32 {mcc['ours fp32']:.4f}")
    print(result_line(native, speed, delta))


if __name__ == "__main__":
    main()
