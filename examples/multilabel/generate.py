"""A small multi-label data set made here, offline: support tickets that are about one to three of
billing, login, shipping and refund, written from templates with a fixed seed (nothing downloaded, no
third-party text; the repository's licence applies). `write_tickets(folder)` writes `tickets.csv` (columns
text, labels: the labels joined by `|`) and `tickets_columns.csv` (the same rows with one 0/1 column per
label), the same bytes every time: `make example-data` calls it for `<EXAMPLES>/tickets/`
(examples/example_data.py), the tests and benches for a folder of their own; nothing of it is committed.
`python -m examples.multilabel.generate DIR` writes the two files into DIR.

Each label has a few phrasings; a ticket joins one phrase per label it has, in a seeded order, with a
seeded greeting and closing, so a model must find every topic in the text, not only the first.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from pathlib import Path

LABELS = ("billing", "login", "shipping", "refund")
DELIMITER = "|"
ROWS = 400
SEED = 36
TICKETS, TICKET_COLUMNS = "tickets.csv", "tickets_columns.csv"

PHRASES = {
    "billing": [
        "I was charged twice on my card this month",
        "my invoice shows the wrong amount",
        "the subscription fee went up without notice",
        "please update the billing address on my account",
        "why is there an extra charge on my statement",
        "the payment failed but the bank says it went through",
    ],
    "login": [
        "I cannot sign in to my account",
        "the password reset email never arrives",
        "two-factor code is rejected every time",
        "my account is locked after too many attempts",
        "the app logs me out every few minutes",
        "I forgot my username and cannot log in",
    ],
    "shipping": [
        "my parcel has not arrived yet",
        "the tracking number shows no updates for a week",
        "the package was delivered to the wrong address",
        "delivery is late again",
        "the courier left the box damaged at the door",
        "can you ship my order faster",
    ],
    "refund": [
        "I want my money back for the returned item",
        "the refund I was promised has not come through",
        "please cancel the order and refund me",
        "how long does a refund take",
        "I returned the jacket and still have no refund",
        "refund the duplicate payment please",
    ],
}
OPENINGS = ["Hello,", "Hi team,", "Good morning.", "Hey,", "", "Dear support,"]
CLOSINGS = ["Thanks.", "Please help.", "Regards.", "", "This is urgent.", "Thank you in advance."]
# How many labels a ticket has: mostly one, often two, sometimes three.
LABEL_COUNTS = (1, 1, 1, 2, 2, 3)


def tickets(rows: int = ROWS, seed: int = SEED) -> list[tuple[str, list[str]]]:
    """(text, labels in LABELS order) per ticket; the same for the same arguments."""
    rng = random.Random(seed)
    made: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    while len(made) < rows:  # every text once: a repeated ticket would sit in two splits
        chosen = rng.sample(LABELS, rng.choice(LABEL_COUNTS))
        phrases = [rng.choice(PHRASES[label]) for label in chosen]
        body = " and ".join(phrases[:2]) + ("; also " + phrases[2] if len(phrases) > 2 else "")
        text = " ".join(
            part
            for part in (rng.choice(OPENINGS), body[0].upper() + body[1:] + ".", rng.choice(CLOSINGS))
            if part
        )
        if text not in seen:
            seen.add(text)
            made.append((text, [label for label in LABELS if label in chosen]))
    return made


def render(rows: list[tuple[str, list[str]]], columns: bool) -> str:
    """The CSV text: `text,labels` (joined by DELIMITER), or `text` and one 0/1 column per label."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", *LABELS] if columns else ["text", "labels"])
    for text, labels in rows:
        cells = [int(label in labels) for label in LABELS] if columns else [DELIMITER.join(labels)]
        writer.writerow([text, *cells])
    return out.getvalue()


def write_tickets(folder: Path) -> tuple[Path, Path]:
    """`folder`/tickets.csv (a `|` list per row) and `folder`/tickets_columns.csv (0/1 columns), the
    default ROWS tickets of SEED; the folder is made if missing. Returns the two paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = tickets()
    paths = folder / TICKETS, folder / TICKET_COLUMNS
    for path, columns in zip(paths, (False, True), strict=True):
        path.write_text(render(rows, columns=columns), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help=f"where {TICKETS} and {TICKET_COLUMNS} go")
    for path in write_tickets(parser.parse_args(argv).out):
        print(f"{path}: {ROWS} tickets")


if __name__ == "__main__":
    main()
