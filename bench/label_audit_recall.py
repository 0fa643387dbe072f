"""The label audit's recall and cost: `python bench/label_audit_recall.py [--dataset cola] [--flip 0.02]`.

Plants flipped labels into the training pool a default run audits (CoLA: in_domain_train.tsv less the
validation split; a host file: its rows) and runs preprocess/label_audit.py's `audit` on it, in this
process, on this machine's cores. Printed: the rows, the flipped rows, how many of them the audit lists
(recall over the whole list and within its first 2 x flipped rows), the list's length, and the seconds
(embedding, cross-validation, confident learning), with the CPU model.
"""

import argparse
from pathlib import Path

import numpy as np

from sentclf.schema import LABEL_COLUMN

import benchlib

# The preprocess step's own reading, validation, split and audit, as the step runs them.
benchlib.use_steps("preprocess")
from label_audit import audit  # noqa: E402
from labels import encode  # noqa: E402
from sources import Columns, load_source  # noqa: E402
from splitting import stratified_split  # noqa: E402
from validation import ValidationReport, validate_parts  # noqa: E402


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line), "?")
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return f"{model}; avx512_bf16 {'present' if 'avx512_bf16' in flags else 'absent'}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="cola")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--flip", type=float, default=0.02, help="share of rows whose label is flipped")
    parser.add_argument("--max-rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from labels import derive_label_set

    source = load_source(args.dataset, Columns(args.text_column, args.label_column))
    report = ValidationReport()
    train = validate_parts(source.parts["train"], "train", report)
    label_set = train.attrs.get("label_set") or derive_label_set(train, report)
    pool, _ = stratified_split(encode(train, label_set), 0.1, args.seed)
    rng = np.random.default_rng(args.seed)
    flipped = rng.choice(len(pool), int(round(args.flip * len(pool))), replace=False)
    labels = pool[LABEL_COLUMN].to_numpy().copy()
    # Each planted row gets another class, drawn uniformly among the others.
    labels[flipped] = (labels[flipped] + rng.integers(1, label_set.size, len(flipped))) % label_set.size
    planted = pool.assign(**{LABEL_COLUMN: labels})
    result = audit(planted, label_set, args.seed, args.max_rows)
    listed = result.issues["row"].to_numpy() - 1  # audit's default rows: 1-based positions
    found = np.isin(flipped, listed).sum()
    top = np.isin(flipped, listed[: 2 * len(flipped)]).sum()
    print(f"dataset {args.dataset}: {result.rows} rows, {label_set.size} classes, {len(flipped)} flipped")
    print(
        f"listed {len(listed)} rows as label issues; flipped rows among them: {found} "
        f"({found / len(flipped):.0%})"
    )
    print(f"flipped rows in the first {2 * len(flipped)} listed: {top} ({top / len(flipped):.0%})")
    print(f"audit seconds: {result.seconds:.1f}; CPU: {cpu_model()}")


if __name__ == "__main__":
    main()
