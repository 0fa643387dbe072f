"""The multi-label label audit's recall and cost: `python bench/multilabel_audit_recall.py [--wrong 0.05]`.

Plants wrong label sets into the example multi-label tickets (tickets.csv as `make example-data` writes
it, examples/multilabel/generate.py, here into a temporary folder; labels a `|` list): each chosen text
loses one of its labels and gains one it did not have. Then runs preprocess/multilabel_audit.py's
`audit_multilabel` (the bundled backbone's embeddings, per-label out-of-fold logistic regressions,
cleanlab's multi-label confident learning) in this process, on this machine's cores. Printed: the texts,
the planted ones, how many of them the audit lists (over the whole list and within its first 2 x planted),
the list's length and the seconds, with the CPU model.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, LabelSet

import benchlib

benchlib.use_steps("preprocess")
from multilabel_audit import audit_multilabel  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wrong", type=float, default=0.05, help="share of texts given a wrong label set")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sentclf-bench-") as tmp:
        frame = pd.read_csv(benchlib.example_tickets(Path(tmp)))
    names = tuple(sorted({name for labels in frame["labels"] for name in labels.split("|")}))
    sets = [sorted(names.index(name) for name in labels.split("|")) for labels in frame["labels"]]
    rng = np.random.default_rng(args.seed)
    planted = rng.choice(len(frame), int(round(args.wrong * len(frame))), replace=False)
    for row in planted:  # one label dropped, one absent label added: the set is wrong both ways
        missing = [j for j in range(len(names)) if j not in sets[row]]
        kept = [j for j in sets[row] if j != rng.choice(sets[row])]
        sets[row] = sorted(kept + [int(rng.choice(missing))]) if missing else kept or [0]
    pool = pd.DataFrame({TEXT_COLUMN: frame["text"], LABEL_COLUMN: sets})
    result = audit_multilabel(pool, LabelSet(names, names), args.seed, max_rows=len(pool))
    listed = result.issues["row"].to_numpy() - 1  # default rows: 1-based positions
    found = np.isin(planted, listed).sum()
    top = np.isin(planted, listed[: 2 * len(planted)]).sum()
    print(f"tickets: {result.rows} texts, {len(names)} labels, {len(planted)} given a wrong label set")
    print(f"listed {len(listed)} texts; planted among them: {found} ({found / len(planted):.0%})")
    print(f"planted in the first {2 * len(planted)} listed: {top} ({top / len(planted):.0%})")
    print(f"audit seconds: {result.seconds:.1f}; CPU: {benchlib.cpu_line()}")


if __name__ == "__main__":
    main()
