"""The offline example of a sentence-pair task (docs/pairs.md): pairs of support questions that ask the
same thing (`is_duplicate` 1) or not (0), made from templates with a fixed seed, so that the file
questions.csv beside this script is the same bytes on every machine (tests/unit/test_preprocess_pairs.py
checks it). Written for this repository, no downloads, no licence of anyone else's data.

Neither question alone tells the label: a duplicate pair asks the same thing (intent) about the same thing
(object) in two different wordings; a different pair changes the intent or the object while often keeping
the wording, so a model must read both questions together.

    python examples/pairs/make_pairs.py            # rewrites examples/pairs/questions.csv
"""

import csv
import io
import random
import sys
from pathlib import Path

SEED = 36
ROWS = 480  # half duplicates, half different
OUT = Path(__file__).resolve().parent / "questions.csv"
COLUMNS = ("question1", "question2", "is_duplicate")

# Each intent's wordings of one question about {x}.
INTENTS = {
    "reset": [
        "How do I reset my {x}?",
        "What is the way to reset my {x}?",
        "I forgot my {x}, how can I reset it?",
        "Can you help me reset the {x}?",
    ],
    "delete": [
        "How do I delete my {x}?",
        "How can I remove my {x} for good?",
        "What are the steps to delete the {x}?",
        "Is there a way to get rid of my {x}?",
    ],
    "change": [
        "How do I change my {x}?",
        "Can I update the {x} on file?",
        "Where do I edit my {x}?",
        "What is the way to modify my {x}?",
    ],
    "lost": [
        "I lost my {x}, what should I do?",
        "What happens if I lose my {x}?",
        "My {x} is missing, can you help?",
        "How do I recover a lost {x}?",
    ],
    "share": [
        "Can I share my {x} with my family?",
        "Is it allowed to give my {x} to someone else?",
        "How do I let another person use my {x}?",
        "Can two people use the same {x}?",
    ],
    "secure": [
        "How do I keep my {x} safe?",
        "What can I do to protect my {x}?",
        "How secure is my {x}?",
        "Is my {x} safe from hackers?",
    ],
}
OBJECTS = [
    "password",
    "account",
    "subscription",
    "email address",
    "phone number",
    "payment card",
    "username",
    "profile picture",
    "billing address",
    "security question",
]


def duplicate(rng: random.Random) -> tuple[str, str, int]:
    """One question in two wordings."""
    wordings = INTENTS[rng.choice(sorted(INTENTS))]
    first, second = rng.sample(wordings, 2)
    thing = rng.choice(OBJECTS)
    return first.format(x=thing), second.format(x=thing), 1


def different(rng: random.Random) -> tuple[str, str, int]:
    """Two questions that differ in the intent, the object, or both (a third each)."""
    intent = rng.choice(sorted(INTENTS))
    thing = rng.choice(OBJECTS)
    kind = rng.randrange(3)
    other_intent = intent if kind == 1 else rng.choice([i for i in sorted(INTENTS) if i != intent])
    other_thing = thing if kind == 0 else rng.choice([o for o in OBJECTS if o != thing])
    first = rng.choice(INTENTS[intent]).format(x=thing)
    second = rng.choice(INTENTS[other_intent]).format(x=other_thing)
    return first, second, 0


def make_rows(rows: int = ROWS, seed: int = SEED) -> list[tuple[str, str, int]]:
    """`rows` distinct pairs, half of each label, in a seeded order."""
    rng = random.Random(seed)
    made: dict[tuple[str, str], int] = {}
    for make, count in ((duplicate, rows // 2), (different, rows - rows // 2)):
        wanted = len(made) + count
        while len(made) < wanted:
            first, second, label = make(rng)
            if (first, second) not in made and (second, first) not in made:
                made[(first, second)] = label
    pairs = [(first, second, label) for (first, second), label in made.items()]
    rng.shuffle(pairs)
    return pairs


def render(pairs: list[tuple[str, str, int]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(pairs)
    return out.getvalue()


def main() -> int:
    OUT.write_text(render(make_rows()), encoding="utf-8")
    print(f"wrote {OUT} ({ROWS} pairs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
