"""`make label-next`: the sentences a person should label next, as a file ready to label.

    python -m tools.label_next --capture captured/ --texts unlabelled.txt --count 50 --out label-queue/

Candidates come from the server's capture folder (the records' text: a capture written with
CAPTURE_TEXT=false holds only hashes and gives none) and/or any file or folder of unlabelled text (.txt:
one sentence a line; .csv/.tsv/.jsonl/.parquet: the --text-column). A registered version
(`models:/<name>@champion` by default) scores them from its own files (sentclf_runtime's Scorer, as
tools.explore does: no torch, no server), and the list mixes two things:
- uncertainty: 1 - (top probability - second probability), the margin the version is least sure about;
- diversity: maximal marginal relevance over the version's own sentence vectors (the input of its final
  linear layer), each next pick being the most uncertain sentence that is least like those already picked,
  so the list is not N near-copies of the same confusing sentence.
Skipped: sentences already in the version's data (its preprocess run's train, validation and test splits,
compared case- and whitespace-insensitively as preprocess compares them) and sentences already asked for
(the ledger `asked.jsonl` in --out, one line per sentence ever written to a batch).

Written: `<out>/batch-<UTC time>.csv` with the training data's columns (--text-column, --label-column;
the label empty), most useful first. Labelled and dropped into the data folder, it is the next night's
new batch. Bad input (an empty capture, a file without the text column, --count above what is left) gets
a message naming the problem and the fix, and nothing is written.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from sentclf.contract import DEFAULT_CHAMPION_URI, MODEL_URI_FORMS, model_uri
from sentclf.label_selection import BALANCE_CHOICES, DEFAULT_BALANCE, predicted_classes, select, uncertainty
from sentclf.unlabelled_text import TextSourceError, capture_texts, given_texts, sentence_key

logger = logging.getLogger("label_next")

LEDGER = "asked.jsonl"
# Candidates scored at most (a seeded sample above it): the scoring and the O(N * pool) selection stay
# well under a minute on a laptop.
MAX_POOL = 20000
# How much uncertainty counts against sameness in each pick (1: uncertainty only, 0: diversity only).
DEFAULT_UNCERTAINTY_WEIGHT = 0.5


# The input cannot give a batch; the message says why and what to do (the readers' error, one class).
LabelNextError = TextSourceError


def key_hash(text: str) -> str:
    return hashlib.sha256(sentence_key(text).encode("utf-8", "surrogatepass")).hexdigest()


def read_ledger(out: Path) -> set[str]:
    path = out / LEDGER
    if not path.is_file():
        return set()
    return {json.loads(line)["sha256"] for line in path.read_text().splitlines() if line.strip()}


@dataclass(frozen=True)
class Pool:
    texts: list[str]
    skipped_known: int  # in the version's data
    skipped_asked: int  # in the ledger
    duplicates: int  # repeats within the candidates


def candidate_pool(texts: list[str], known: set[str], asked: set[str], seed: int) -> Pool:
    """The distinct, non-empty candidates that are neither labelled already nor asked for, at most
    MAX_POOL (a seeded sample above it)."""
    seen: set[str] = set()
    kept, in_data, in_ledger, repeats = [], 0, 0, 0
    for text in texts:
        if not text.strip():
            continue
        digest = key_hash(text)
        if digest in seen:
            repeats += 1
        elif digest in known:
            in_data += 1
        elif digest in asked:
            in_ledger += 1
        else:
            kept.append(text.strip())
        seen.add(digest)
    if len(kept) > MAX_POOL:
        rng = np.random.default_rng(seed)
        kept = [kept[i] for i in sorted(rng.choice(len(kept), MAX_POOL, replace=False))]
    return Pool(kept, in_data, in_ledger, repeats)


def resolve_version(uri: str, work_dir: Path) -> tuple[Path, str | None, str]:
    """(the version's downloaded files, its preprocess run id or None, `name version N`)."""
    import mlflow

    from sentclf.tracking import registered_version, version_data_run_id

    try:
        version = registered_version(uri)
    except ValueError as error:
        raise LabelNextError(f"--model {error}") from None
    name, number = version.name, str(version.version)
    model_dir = mlflow.artifacts.download_artifacts(model_uri(name, number), dst_path=str(work_dir))
    return Path(model_dir), version_data_run_id(name, number), f"{name} version {number}"


def labelled_keys(data_run_id: str | None) -> set[str]:
    """The hashed keys of every sentence in the version's data (train, validation, test)."""
    from sentclf.data import read_split
    from sentclf.schema import SPLITS, TEXT_COLUMN

    if not data_run_id:
        logger.warning("the version names no preprocess run: its training sentences cannot be skipped")
        return set()
    keys = set()
    for split in SPLITS:
        frame = read_split(data_run_id, split, allow_empty=True)
        keys |= {key_hash(text) for text in frame[TEXT_COLUMN].tolist()}
    return keys


def write_batch(texts: list[str], out: Path, text_column: str, label_column: str, now: datetime) -> Path:
    """The batch file and its ledger lines (the batch first: a ledger line never names a file not written).
    A batch never replaces another: a second one in the same second is `batch-<time>_2.csv` (sorting after
    the first), or the first one's sentences, already in the ledger, would never be asked for again."""
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({text_column: texts, label_column: [""] * len(texts)})
    stem = f"batch-{now.strftime('%Y%m%dT%H%M%SZ')}"
    for number in itertools.count(1):
        path = out / (f"{stem}.csv" if number == 1 else f"{stem}_{number}.csv")
        try:
            with path.open("x", encoding="utf-8", newline="") as handle:  # "x": never an existing one
                frame.to_csv(handle, index=False)
            break
        except FileExistsError:
            continue
    stamp = now.isoformat(timespec="seconds")
    with (out / LEDGER).open("a", encoding="utf-8") as ledger:
        for text in texts:
            ledger.write(json.dumps({"sha256": key_hash(text), "batch": path.name, "time": stamp}) + "\n")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_CHAMPION_URI, help=MODEL_URI_FORMS)
    parser.add_argument("--capture", type=Path, help="the server's capture folder")
    parser.add_argument("--texts", type=Path, help="a file or folder of unlabelled text")
    parser.add_argument("--count", type=int, default=50, help="sentences to ask for (default 50)")
    parser.add_argument("--out", type=Path, default=Path("label-queue"), help="batches and the ledger")
    parser.add_argument("--text-column", default="sentence", help="the data's text column (default sentence)")
    parser.add_argument("--label-column", default="label", help="the data's label column (default label)")
    parser.add_argument(
        "--uncertainty-weight",
        type=float,
        default=DEFAULT_UNCERTAINTY_WEIGHT,
        help="1: the most uncertain only; 0: the most different only (default 0.5)",
    )
    parser.add_argument(
        "--balance",
        choices=BALANCE_CHOICES,
        default=DEFAULT_BALANCE,
        help="`predicted`: the model's predicted classes take turns in the batch; `none`: margin and "
        f"diversity alone (default {DEFAULT_BALANCE})",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.capture is None and args.texts is None:
        parser.error("give --capture <folder> and/or --texts <file or folder>: where the candidates are")
    if args.count < 1:
        parser.error(f"--count must be >= 1, got {args.count}")
    if not 0.0 <= args.uncertainty_weight <= 1.0:
        parser.error(f"--uncertainty-weight must be in [0, 1], got {args.uncertainty_weight}")
    return args


def run(args: argparse.Namespace, now: datetime | None = None) -> Path:
    from tools.explore import Explorer

    texts = []
    if args.capture is not None:
        texts += capture_texts(args.capture)
    if args.texts is not None:
        texts += given_texts(args.texts, args.text_column)
    with tempfile.TemporaryDirectory(prefix="sentclf-label-next-") as tmp:
        model_dir, data_run_id, described = resolve_version(args.model, Path(tmp))
        pool = candidate_pool(texts, labelled_keys(data_run_id), read_ledger(args.out), args.seed)
        if len(pool.texts) < args.count:
            raise LabelNextError(
                f"asked for {args.count} sentences but only {len(pool.texts)} new candidate(s) remain of "
                f"{len(texts)} ({pool.skipped_known} already in the data, {pool.skipped_asked} already asked "
                f"for in {args.out / LEDGER}, {pool.duplicates} repeats): lower --count or give more text"
            )
        explorer = Explorer(model_dir, [], [])
        probabilities, vectors = explorer.score_and_embed(pool.texts)
        scores = uncertainty(probabilities)
        classes = predicted_classes(probabilities, args.balance)
        picks = select(vectors, scores, args.count, args.uncertainty_weight, classes)
    chosen = [pool.texts[i] for i in picks]
    path = write_batch(chosen, args.out, args.text_column, args.label_column, now or datetime.now(UTC))
    logger.info(
        "%s: %d of %d candidates chosen (mean uncertainty %.3f vs %.3f over the pool; skipped %d in the "
        "data, %d asked before, %d repeats) -> %s",
        described,
        len(chosen),
        len(pool.texts),
        float(scores[picks].mean()),
        float(scores.mean()),
        pool.skipped_known,
        pool.skipped_asked,
        pool.duplicates,
        path,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = run(args)
    except LabelNextError as error:
        raise SystemExit(f"label_next: {error}") from None
    print(f"label these, then drop the file into the data folder: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
