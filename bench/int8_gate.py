"""The train step's int8 rule on a registered model: the static int8 variant (train/int8.py, as the train
step builds it; `--dynamic`: its dynamic int8 candidate) against fp32 on the same test rows with the
paired bootstrap the rule uses, the decision it would take, and raw ONNX Runtime throughput of both on
this CPU. A version that already serves int8 is measured from the fp32 model its train run kept beside it
(benchlib.registered_model_files).

Usage (dev venv): python bench/int8_gate.py [--model-name cola-classifier] [--model-version challenger]
The last line reads `served=<int8|fp32> delta_mcc=<d> low=<l> high=<h> agreement=<a> speedup=<x>` (int8
minus fp32, 95% interval; speedup: int8's sentences/s over fp32's, length-sorted batches of 32, best of
--rounds, the two in turns so that load on the machine hits both alike).
"""

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from tokenizers import Tokenizer

from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN

import benchlib

benchlib.use_steps("train")
import int8  # noqa: E402  (train/int8.py: the train step's quantisation and rule)

BATCH = 32
log = logging.getLogger("bench.int8")


@dataclass(frozen=True)
class Rows:
    """A split's rows as length-sorted padded batches, as the server's buckets see them."""

    feeds: list[dict[str, np.ndarray]]
    order: np.ndarray  # the row index of each scored row, batch after batch
    labels: np.ndarray

    def predictions(self, session: ort.InferenceSession) -> np.ndarray:
        logits = np.concatenate([session.run(None, feed)[0] for feed in self.feeds])
        result = np.empty(len(self.order), dtype=np.int64)
        result[self.order] = logits.argmax(axis=1)
        return result


def encode(ids: list[list[int]], labels: np.ndarray) -> Rows:
    order = np.argsort([len(row) for row in ids], kind="stable")
    feeds = []
    for start in range(0, len(order), BATCH):
        chunk = [ids[i] for i in order[start : start + BATCH]]
        width = max(len(row) for row in chunk)
        padded = np.asarray([row + [0] * (width - len(row)) for row in chunk], dtype=np.int64)
        mask = np.asarray([[1] * len(row) + [0] * (width - len(row)) for row in chunk], dtype=np.int64)
        feeds.append({"input_ids": padded, "attention_mask": mask, "token_type_ids": np.zeros_like(padded)})
    return Rows(feeds, order, labels)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def sentences_per_second(sess: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> float:
    start = time.perf_counter()
    for feed in feeds:
        sess.run(None, feed)
    return sum(len(f["input_ids"]) for f in feeds) / (time.perf_counter() - start)


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), "?")
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []
    )
    wanted = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return f"cpu: {model}, {os.cpu_count()} cores, " + " ".join(f"{f}={f in flags}" for f in wanted)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-name", default="cola-classifier")
    parser.add_argument("--model-version", default="challenger", help="a version number or an alias")
    parser.add_argument("--max-mcc-loss", type=float, default=int8.DEFAULT_MAX_MCC_LOSS)
    parser.add_argument("--rounds", type=int, default=5, help="throughput passes per model (best kept)")
    parser.add_argument(
        "--keep-fp32",
        type=int,
        default=int8.KEEP_FP32_FFN_OUTPUTS,
        help="feed-forward output MatMuls kept fp32, from the first layer on (the train step: the default)",
    )
    parser.add_argument("--dynamic", action="store_true", help="the dynamic int8 model instead of static")
    parser.add_argument("--save-int8", type=Path, help="also write the int8 model here (to try it elsewhere)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(cpu_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="sentclf-int8-bench-") as tmp, contextlib.chdir(tmp):
        work = Path(tmp)
        fp32_path, tokenizer_path, config, data = benchlib.registered_model_files(
            args.model_name, args.model_version, work
        )
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=int(config["max_seq_length"]))
        train = pd.read_parquet(data / "train.parquet")
        test_frame = pd.read_parquet(data / "test.parquet")
        test = encode(
            [e.ids for e in tokenizer.encode_batch(test_frame[TEXT_COLUMN].tolist())],
            test_frame[LABEL_COLUMN].to_numpy(np.int64),
        )
        calibration = int8.TrainingRows([e.ids for e in tokenizer.encode_batch(train[TEXT_COLUMN].tolist())])
        started = time.perf_counter()
        if args.dynamic:
            int8_path, kept = int8.quantize_dynamic_int8(fp32_path, work / "model.int8.onnx"), []
        else:
            int8_path, kept = int8.quantize_int8(
                fp32_path, work / "model.int8.onnx", calibration, args.keep_fp32
            )
        quantize_s = time.perf_counter() - started
        sessions = {"fp32": session(fp32_path), "int8": session(int8_path)}
        predictions = {name: test.predictions(s) for name, s in sessions.items()}
        classes = len(config.get("labels", ["unacceptable", "acceptable"]))
        decision = int8.decide(
            test.labels, predictions["fp32"], predictions["int8"], classes, args.max_mcc_loss
        )
        speed = {name: 0.0 for name in sessions}
        for _ in range(args.rounds):
            for name, s in sessions.items():
                speed[name] = max(speed[name], sentences_per_second(s, test.feeds))
        sizes = {"fp32": fp32_path.stat().st_size / 1e6, "int8": int8_path.stat().st_size / 1e6}
        if args.save_int8:
            shutil.copyfile(int8_path, args.save_int8)
    print(f"kept fp32: {', '.join(kept) or 'none'}; quantisation {quantize_s:.0f} s")
    print(f"fp32: {speed['fp32']:.1f} sentences/s, {sizes['fp32']:.1f} MB")
    print(f"int8: {speed['int8']:.1f} sentences/s, {sizes['int8']:.1f} MB")
    print(decision.reason)
    delta = decision.comparison.delta_mcc
    print(
        f"served={decision.served} delta_mcc={delta.value:+.4f} low={delta.low:+.4f} high={delta.high:+.4f} "
        f"agreement={decision.agreement:.4f} speedup={speed['int8'] / speed['fp32']:.2f}"
    )


if __name__ == "__main__":
    main()
