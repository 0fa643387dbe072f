"""Unlabelled text for a teacher when there is none at hand: small edits of the training sentences.

A teacher's soft targets teach the student most on text the student has not seen labelled
(docs/teacher.md). Where no capture folder or dump of unlabelled text exists yet, edited copies of the
labelled sentences serve (the data augmentation of TinyBERT, Jiao et al. 2020, in its simplest form): each
copy changes one thing, and for a task like CoLA's grammaticality many of the edits break the sentence,
so the teacher's answers on them say what breaks it. Each variant gets one edit, chosen at random (seeded):
two neighbouring words swapped, a word dropped, a word repeated, or a word replaced by another word of the
same sentences (drawn by its frequency). Their labels are not known: that is what the teacher is for.

    python examples/sentence_variants.py preprocess/data/cola/in_domain_train.tsv --per-sentence 6 \
        --out ~/cola-variants.txt
    make run ARGS="-P teacher=mpnet -P unlabelled=~/cola-variants.txt"

The input: a .txt file (a sentence a line), a .csv/.tsv/.jsonl/.parquet file with `--text-column`, or a
headerless CoLA .tsv (its fourth column). Written: one variant a line, no repeats, none equal to an input
sentence (preprocess also skips any that is in the labelled data).
"""

import argparse
import collections
import random
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sentclf.unlabelled_text import TextSourceError, given_texts  # noqa: E402

EDITS = ("swap", "drop", "repeat", "replace")


def read_sentences(path: Path, text_column: str) -> list[str]:
    """The input's sentences; a headerless CoLA TSV (four columns, no header) gives its fourth column."""
    if path.suffix.lower() == ".tsv":
        frame = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=3)
        if frame.shape[1] == 4 and text_column not in frame.iloc[0].tolist():
            return frame[3].tolist()
    return given_texts(path, text_column)


def edit(
    words: list[str], kind: str, vocabulary: list[str], weights: list[int], rng: random.Random
) -> list[str]:
    """One edit of a sentence's words (at least two words)."""
    i = rng.randrange(len(words))
    if kind == "swap":
        j = min(i + 1, len(words) - 1) if i < len(words) - 1 else i - 1
        words[i], words[j] = words[j], words[i]
    elif kind == "drop":
        del words[i]
    elif kind == "repeat":
        words.insert(i, words[i])
    else:
        words[i] = rng.choices(vocabulary, weights)[0]
    return words


def variants(sentences: list[str], per_sentence: int, seed: int) -> list[str]:
    """`per_sentence` edited copies of each sentence of two words or more, without repeats or originals."""
    rng = random.Random(seed)
    counts = collections.Counter(word for s in sentences for word in s.split())
    vocabulary, weights = list(counts), list(counts.values())
    known = {" ".join(s.split()) for s in sentences}
    out, seen = [], set()
    for sentence in sentences:
        words = sentence.split()
        if len(words) < 2:
            continue
        for _ in range(per_sentence):
            text = " ".join(edit(list(words), rng.choice(EDITS), vocabulary, weights, rng))
            if text not in known and text not in seen:
                seen.add(text)
                out.append(text)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="the labelled sentences: a file (see above)")
    parser.add_argument("--text-column", default="sentence", help="the text column (default sentence)")
    # 6: on CoLA, 46,954 variants gave the student 0.475 test MCC against 0.380 from 2 per sentence
    # (docs/benchmarks.md, Distillation).
    parser.add_argument("--per-sentence", type=int, default=6, help="variants per sentence (default 6)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True, help="the .txt file to write")
    args = parser.parse_args(argv)
    if args.per_sentence < 1:
        parser.error(f"--per-sentence must be >= 1, got {args.per_sentence}")
    try:
        sentences = read_sentences(args.source.expanduser(), args.text_column)
    except TextSourceError as error:
        parser.error(str(error).replace("--texts ", ""))
    made = variants(sentences, args.per_sentence, args.seed)
    if not made:
        parser.error(f"{args.source}: no sentence of two words or more to edit")
    out = args.out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(made) + "\n", encoding="utf-8")
    print(f"{out}: {len(made)} variants of {len(sentences)} sentences", flush=True)


if __name__ == "__main__":
    main()
