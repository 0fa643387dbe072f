"""A few-label start from a labelled folder (what `make example-data` writes): N labelled rows per class and
the rest of the training rows as unlabelled text, so that the few-label page (docs/few-labels.md) can be
tried, and measured, on real data.

    python examples/few_labels.py ~/sentclf-examples/trec --text-column question --label-column answer_type \
        --per-class 8 --out ~/sentclf-examples/trec-8

Writes, under --out:
- `data/train.csv`: N rows of each class (seeded), the source's columns; `data/test.csv`: the source's
  test file unchanged, so the few-label model is measured on the same test rows as the full-data one;
- `pool.txt`: every other training sentence, one a line, without its label (what `tools.label_next`
  chooses from);
- `pool-labels.csv`: those sentences with their labels, held back: the "person" who labels a batch in a
  measured loop looks the answers up there.
"""

import argparse
from pathlib import Path

import pandas as pd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a folder with train.csv and test.csv")
    parser.add_argument("--text-column", required=True)
    parser.add_argument("--label-column", required=True)
    parser.add_argument("--per-class", type=int, default=8, help="labelled rows kept per class (default 8)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    train = pd.read_csv(args.source / "train.csv", dtype=str, keep_default_na=False)
    missing = {args.text_column, args.label_column} - set(train.columns)
    if missing:
        parser.error(f"{args.source / 'train.csv'} has no column(s) {sorted(missing)} (it has {list(train)})")
    counts = train[args.label_column].value_counts()
    if counts.min() <= args.per_class:
        parser.error(f"class {counts.idxmin()!r} has {counts.min()} rows: --per-class must be below that")
    labelled = train.groupby(args.label_column, group_keys=False).sample(
        args.per_class, random_state=args.seed
    )
    pool = train.drop(labelled.index)
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    labelled.sort_index().to_csv(args.out / "data" / "train.csv", index=False)
    (args.out / "data" / "test.csv").write_bytes((args.source / "test.csv").read_bytes())
    (args.out / "pool.txt").write_text("\n".join(pool[args.text_column].str.replace("\n", " ")) + "\n")
    pool[[args.text_column, args.label_column]].to_csv(args.out / "pool-labels.csv", index=False)
    print(f"{args.out}: {len(labelled)} labelled rows ({args.per_class} per class), {len(pool)} in the pool")


if __name__ == "__main__":
    main()
