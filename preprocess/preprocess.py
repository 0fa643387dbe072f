"""Preprocess step: load the data set, validate it, split it, profile it, check drift, log the splits.

Sources (`dataset`): `cola` (the shipped CoLA files), a host .tsv/.csv/.parquet/.jsonl file or a folder
of them anywhere, the conductor's snapshot of one, or a Hugging Face hub id; see sources/. The label set
comes from the training data, or from `labels` (see labels.py). Artifacts:
data/{train,validation,test}.parquet (columns sentence, label: the class index 0..N-1, and the slice
columns: `slice_columns` and CoLA's source_code, as text), schema.json (with the label set, also in the run
tag `label_names`, and the slice columns), validation_report.json, profile.json, a length histogram,
drift_report.json and label_issues.csv (the label audit, label_audit.py), and with `unlabelled` the new
texts a teacher labels (data/unlabelled.parquet, unlabelled.py); each split is also logged as an
MLflow dataset input (digest, source). Host data and the shipped CoLA leave their sha256 manifest in the
lineage (tags input.dataset*, dataset/manifest.json), host data also a snapshot of its files when this step
read them itself. A blocking validation problem, or drift with fail_on_drift, fails the run before anything
under data/ is logged, so no later step can take it for valid data.
"""

import argparse
import json
import logging
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd

from sentclf.cli import parse_bool
from sentclf.contract import LABEL_NAMES_TAG, TEXT_PAIR_TAG
from sentclf.dataset_snapshot import MANIFEST, SNAPSHOT_DIR, is_snapshot_uri, log_snapshot
from sentclf.schema import (
    DATA_ARTIFACT_DIR,
    LABEL_COLUMN,
    LABEL_MODE_KEY,
    SCHEMA_ARTIFACT,
    SLICE_COLUMNS_KEY,
    TEXT_COLUMN,
    TEXT_PAIR_COLUMN,
    TEXT_PAIR_KEY,
    LabelSet,
)
from sentclf.tracking import record_inputs, step_run
from sentclf_runtime.multilabel import LABEL_MODES, MULTI_LABEL

import label_lists as multilabel
from drift import check_drift
from label_lists import label_counts
from labels import encode, metric_keys, parse_labels_parameter, resolve_labels
from profiling import backbone_tokenizer, log_profile
from sources import Columns, Source, load_source
from sources.readers import MISSING_SLICE_VALUE
from splitting import drop_test_overlap, stratified_split, validation_is_possible
from text_pairs import check_pair_column, parse_text_pair_column
from unlabelled import MAX_UNLABELLED_ROWS, NO_UNLABELLED, UNLABELLED_ARTIFACT, new_texts, read_unlabelled
from validation import ORIGIN_COLUMN, ValidationReport, validate_parts

# label_delimiter by name: the default, `pipe`, needs no quoting in a shell (`-P label_delimiter=|` would be
# a pipe there) nor on the Kubernetes backend, which refuses values a shell would have to quote.
DELIMITER_NAMES = {"pipe": "|", "semicolon": ";", "comma": ",", "slash": "/", "plus": "+"}
logger = logging.getLogger("preprocess")

OVERLAP_POLICIES = ("keep", "drop")
# slice_columns' default: no slice columns (an empty default would reach a Kubernetes Job with its quotes).
NO_SLICE_COLUMNS = "none"
# Columns of the step's own frames, which a slice column must not be named like.
OWN_COLUMNS = (TEXT_COLUMN, LABEL_COLUMN, "row", ORIGIN_COLUMN, TEXT_PAIR_COLUMN)


def parse_slice_columns(text: str, text_column: str, label_column: str) -> tuple[str, ...]:
    """`source,channel` -> ("source", "channel"); `none` (the default) or empty -> (). A name may not be
    the text or label column, nor one of the step's own column names."""
    if text.strip() == NO_SLICE_COLUMNS:
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    clashes = [name for name in names if name in (text_column, label_column, *OWN_COLUMNS)]
    if clashes:
        raise ValueError(
            f"slice_columns {list(clashes)}: a slice column must be another column than the text and label "
            f"columns and than {list(OWN_COLUMNS)}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Every parameter is required: the defaults live in MLproject only."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, help="`cola`, a host file or folder, or a hub id")
    parser.add_argument("--text-column", required=True, help="text column of a local file or hub data set")
    parser.add_argument("--label-column", required=True, help="label column (class numbers or class names)")
    parser.add_argument(
        "--labels",
        required=True,
        help="`auto` (the classes of the training data, sorted) or the classes in order, comma separated, "
        "each `value` or `value:name`: neg,pos,neutral or 0:negative,1:positive",
    )
    parser.add_argument("--val-fraction", type=float, required=True)
    parser.add_argument("--test-fraction", type=float, required=True, help="used when there is no test file")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--overlap-policy", choices=OVERLAP_POLICIES, required=True)
    parser.add_argument(
        "--registered-model-name", required=True, help="whose champion is the drift reference"
    )
    parser.add_argument("--drift-threshold", type=float, required=True)
    parser.add_argument("--fail-on-drift", type=parse_bool, required=True)
    parser.add_argument("--label-audit", type=parse_bool, required=True, help="audit the training labels")
    parser.add_argument(
        "--label-audit-max-rows", type=int, required=True, help="rows audited at most (a seeded sample above)"
    )
    parser.add_argument(
        "--slice-columns",
        required=True,
        help="columns of the files kept for sliced metrics, comma separated (none: none; CoLA's files "
        "always keep their source column)",
    )
    parser.add_argument(
        "--text-pair-column",
        required=True,
        help="a sentence-pair task's second text column (none: single sentences; preprocess/pairs.py)",
    )
    parser.add_argument(
        "--label-mode",
        choices=LABEL_MODES,
        required=True,
        help="single: one class per text; multi: a list of labels per text (label_lists.py)",
    )
    parser.add_argument(
        "--label-delimiter",
        required=True,
        help=f"multi: what separates the labels of a list column: a name ({', '.join(DELIMITER_NAMES)}) "
        "or the characters themselves",
    )
    parser.add_argument(
        "--unlabelled",
        default=NO_UNLABELLED,
        help="a capture folder or a file/folder of text a teacher labels for the student (unlabelled.py)",
    )
    parser.add_argument("--unlabelled-max-rows", type=int, default=MAX_UNLABELLED_ROWS)
    args = parser.parse_args(argv)
    args.text_pair = parse_text_pair_column(args.text_pair_column)
    if args.text_pair in (args.text_column, args.label_column):
        parser.error(f"--text-pair-column {args.text_pair!r} must be another column than the text and label")
    args.label_delimiter = DELIMITER_NAMES.get(args.label_delimiter, args.label_delimiter)
    if args.label_mode == MULTI_LABEL and (not args.label_delimiter or args.label_delimiter.isspace()):
        parser.error(
            "--label-delimiter must be a visible character or a string, e.g. pipe (|), semicolon (;)"
        )
    for name in ("val_fraction", "test_fraction"):
        if not 0.0 < getattr(args, name) < 0.5:
            parser.error(f"--{name.replace('_', '-')} must be in (0, 0.5), got {getattr(args, name)}")
    if not args.text_column.strip() or not args.label_column.strip() or args.text_column == args.label_column:
        parser.error(
            f"--text-column and --label-column must be two column names, got {args.text_column!r} "
            f"and {args.label_column!r}"
        )
    if args.unlabelled != NO_UNLABELLED and (args.text_pair or args.label_mode == MULTI_LABEL):
        parser.error(
            "--unlabelled: a teacher labels single sentences with one class each; this is a "
            f"{'sentence-pair' if args.text_pair else 'multi-label'} task: use unlabelled=none"
        )
    if args.unlabelled_max_rows < 1:
        parser.error(f"--unlabelled-max-rows must be >= 1, got {args.unlabelled_max_rows}")
    if args.label_audit_max_rows < 100:
        parser.error(f"--label-audit-max-rows must be >= 100, got {args.label_audit_max_rows}")
    if args.drift_threshold <= 0:
        parser.error(f"--drift-threshold must be positive, got {args.drift_threshold}")
    try:
        args.label_set = parse_labels_parameter(args.labels)
        multi = args.label_mode == MULTI_LABEL
        label_columns = (multi and multilabel.indicator_columns(args.label_column)) or (args.label_column,)
        args.slices = parse_slice_columns(args.slice_columns, args.text_column, label_columns[0])
        if set(args.slices) & set(label_columns):
            raise ValueError(f"slice_columns {list(args.slices)} name a label column {list(label_columns)}")
        if args.text_pair in args.slices:
            raise ValueError(f"slice_columns: {args.text_pair!r} is the second text column, text_pair_column")
        if args.text_pair in label_columns:
            raise ValueError(f"--text-pair-column {args.text_pair!r} is a label column {list(label_columns)}")
    except ValueError as error:
        parser.error(str(error))
    return args


def log_unlabelled(
    texts: list[str], splits: dict[str, pd.DataFrame], args: argparse.Namespace, out_dir: Path
) -> None:
    """data/unlabelled.parquet (the new texts, unlabelled.py) and its counts."""
    frame, counts = new_texts(texts, splits, args.seed, args.unlabelled_max_rows)
    frame.to_parquet(out_dir / UNLABELLED_ARTIFACT, index=False)
    mlflow.log_metrics(counts)
    logger.info(
        "unlabelled: %d new texts kept (%d already labelled, %d repeats skipped)",
        counts["unlabelled_rows"],
        counts["unlabelled_skipped_labelled"],
        counts["unlabelled_repeats"],
    )


def slice_columns_of(splits: dict[str, pd.DataFrame]) -> list[str]:
    """The slice columns the sources kept (see sources.readers), in the order found."""
    found = (column for frame in splits.values() for column in frame.columns)
    return [name for name in dict.fromkeys(found) if name not in OWN_COLUMNS]


def write_splits(splits: dict[str, pd.DataFrame], out_dir: Path) -> None:
    """data/<split>.parquet: sentence, label (the class index) and the slice columns as text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slices = slice_columns_of(splits)
    for name, frame in splits.items():
        # A folder's files may not all hold a column CoLA's layout adds (its source): missing there.
        pair = [TEXT_PAIR_COLUMN] if TEXT_PAIR_COLUMN in frame.columns else []
        kept = frame.reindex(columns=[TEXT_COLUMN, *pair, LABEL_COLUMN, *slices])
        kept[slices] = kept[slices].fillna(MISSING_SLICE_VALUE).astype(str)
        kept.to_parquet(out_dir / f"{name}.parquet", index=False)


def split_metrics(splits: dict[str, pd.DataFrame], label_set: LabelSet) -> dict[str, float]:
    """Rows, and each class's share, per split: `<split>_share_<class name as a metric key>`."""
    metrics = {}
    for name, frame in splits.items():
        metrics[f"{name}_rows"] = len(frame)
        multi = multilabel.is_list_column(frame[LABEL_COLUMN])
        counts = label_counts(frame[LABEL_COLUMN], label_set.size) if multi else None
        for index, key in enumerate(metric_keys(label_set)):
            share = counts[index] / len(frame) if multi else (frame[LABEL_COLUMN] == index).mean()
            metrics[f"{name}_share_{key}"] = float(share)
    return metrics


def make_splits(
    frames: dict[str, pd.DataFrame], source: Source, args: argparse.Namespace, report: ValidationReport
) -> tuple[dict[str, pd.DataFrame], int]:
    """(train, validation, test splits; rows dropped by the overlap policy). Problems go into `report`."""
    pool, test = frames["train"], frames.get("test")
    split = multilabel.multilabel_split if args.label_mode == MULTI_LABEL else stratified_split
    if test is None:
        # No held-out file: hold out a stratified share of the train file, as CoLA's dev file would be.
        pool, test = split(pool, args.test_fraction, args.seed)
    dropped = pool.iloc[:0]
    if args.overlap_policy == "drop":
        pool, dropped = drop_test_overlap(pool, test)
        if len(dropped):
            report.add(
                "info",
                "overlap_dropped",
                source.origin["train"],
                TEXT_COLUMN,
                dropped["row"].tolist(),
                f"{len(dropped)} row(s) whose sentence also occurs in the test split were dropped from "
                "train/validation (overlap_policy=drop)",
            )
    # Few-shot (no validation split, the train step cross-validates) is a single-label mode: a multi-label
    # set's labels are lists, checked and split by label_lists / multilabel.
    few_shot = (
        args.label_mode != MULTI_LABEL
        and not pool.empty
        and not validation_is_possible(pool, args.val_fraction)
    )
    if few_shot:
        train, validation = no_validation_split(pool, args.val_fraction, source, report)
    else:
        train, validation = split(pool, args.val_fraction, args.seed)
    splits = {"train": train, "validation": validation, "test": test}
    # An empty validation split is the few-shot case, reported by no_validation_split.
    report.check_split_sizes({n: f for n, f in splits.items() if not (few_shot and n == "validation")})
    report.check_cross_split_overlap(splits)
    return splits, len(dropped)


def no_validation_split(
    pool: pd.DataFrame, val_fraction: float, source: Source, report: ValidationReport
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every row as train, an empty validation split): too few rows of some class to hold one out at
    val_fraction; check_class_rows let it through because the train step's few-shot mode cross-validates
    on the training rows instead (an ordinary fine-tune refuses such a run, naming the fix)."""
    report.add(
        "warning",
        "no_validation_split",
        source.origin["train"],
        LABEL_COLUMN,
        [],
        f"too few rows per class to hold out a validation split at val_fraction={val_fraction} (the rarest "
        f"class has {int(pool[LABEL_COLUMN].value_counts().min())}): every row is training data and the "
        "train step's few-shot mode validates by cross-validation (few_shot=false refuses this run)",
    )
    return pool.reset_index(drop=True), pool.iloc[:0].reset_index(drop=True)


def class_counts(splits: dict[str, pd.DataFrame], label_set: LabelSet) -> dict[str, dict[str, int]]:
    """split -> class name -> rows, in class-index order."""
    return {
        name: {
            label: int(count)
            for label, count in zip(
                label_set.names,
                label_counts(frame[LABEL_COLUMN], label_set.size),
                strict=True,
            )
        }
        for name, frame in splits.items()
    }


def log_schema(
    splits: dict[str, pd.DataFrame], label_set: LabelSet, work_dir: Path, text_pair: str | None = None
) -> dict:
    """schema.json: the splits' columns, the label set (what every later step reads the classes from)
    and each split's class counts; for a sentence-pair task, the user's second text column."""
    slices = slice_columns_of(splits)
    pair = {TEXT_PAIR_COLUMN: "string"} if text_pair else {}
    multi = any(multilabel.is_list_column(frame[LABEL_COLUMN]) for frame in splits.values())
    label_type = "list<int64>" if multi else "int64"
    schema = {
        "columns": {TEXT_COLUMN: "string", **pair, LABEL_COLUMN: label_type}
        | {name: "string" for name in slices},
        TEXT_PAIR_KEY: text_pair,
        SLICE_COLUMNS_KEY: slices,
        "label_set": label_set.as_dict(),
        # The class index (the label column's value) -> its name; kept for readers of the first layout.
        "labels": {str(i): name for i, name in enumerate(label_set.names)},
        "class_counts": class_counts(splits, label_set),
        "splits": list(splits),
    } | ({LABEL_MODE_KEY: MULTI_LABEL} if multi else {})
    (work_dir / SCHEMA_ARTIFACT).write_text(json.dumps(schema, indent=2))
    mlflow.log_artifact(str(work_dir / SCHEMA_ARTIFACT))
    return schema


def log_lineage(splits: dict[str, pd.DataFrame], source: Source) -> None:
    """Each split as an MLflow dataset input, so `mlflow ui` shows its digest and where it came from."""
    with warnings.catch_warnings():
        # A plain path matches two equivalent local source types; MLflow warns and picks either.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        # The label column is validated complete, so the hint about missing integers does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        # MLflow's digest code calls a pandas API in a form pandas 4 will drop: not ours to fix.
        warnings.filterwarnings("ignore", message="Starting with pandas version 4.0")
        for name, frame in splits.items():
            if frame.empty:  # a few-shot set's validation split: MLflow cannot digest an empty frame
                continue
            # validation (and a test split held out of a single file) come from the train file.
            origin = source.lineage.get(name, source.lineage["train"])
            pair = [TEXT_PAIR_COLUMN] if TEXT_PAIR_COLUMN in frame.columns else []
            columns = frame[[TEXT_COLUMN, *pair, LABEL_COLUMN]]
            if multilabel.is_list_column(columns[LABEL_COLUMN]):  # the digest needs scalars: "0|2"
                columns = columns.assign(
                    **{LABEL_COLUMN: ["|".join(map(str, row)) for row in columns[LABEL_COLUMN]]}
                )
            dataset = mlflow.data.from_pandas(columns, source=origin, name=name, targets=LABEL_COLUMN)
            mlflow.log_input(dataset, context=name)


def record_host_data(source: Source, dataset: str) -> None:
    """The lineage of the data's files: their manifest, and the files themselves unless the conductor
    already logged them (a snapshot URI) or they ship with this step (the shipped CoLA: the code commit
    pins them), so that the run alone tells what it was trained from, byte for byte. Hub data has none."""
    if source.manifest is None:
        return
    record_inputs(dataset=source.manifest.source, dataset_sha256=source.manifest.sha256)
    if is_snapshot_uri(dataset):
        record_inputs(dataset_snapshot=dataset)
    if is_snapshot_uri(dataset) or source.data_path is None:
        mlflow.log_dict(source.manifest.as_dict(), f"{SNAPSHOT_DIR}/{MANIFEST}")
    else:
        record_inputs(dataset_snapshot=log_snapshot(source.data_path, source.manifest))


def audit_labels(
    splits: dict[str, pd.DataFrame], label_set: LabelSet, args: argparse.Namespace, work_dir: Path
) -> None:
    """The label audit of the training data (train + validation), label_issues.csv; label lists are
    audited per label (multilabel_audit.py). A step image built before cleanlab was added skips it with a
    warning and the tag label_audit=skipped."""
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        logger.warning("label audit skipped: cleanlab is not installed in this image (make step-lock images)")
        mlflow.set_tag("label_audit", "skipped: cleanlab not installed")
        return
    from label_audit import audit, log_label_audit

    pool = pd.concat([splits["train"], splits["validation"]], ignore_index=True)
    if args.label_mode == MULTI_LABEL:
        from multilabel_audit import audit_multilabel as audit
    log_label_audit(pool, label_set, args.seed, args.label_audit_max_rows, work_dir, auditor=audit)
    mlflow.set_tag("label_audit", "done")


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sentclf-preprocess-") as tmp:
        tmp_dir = Path(tmp)
        multi = args.label_mode == MULTI_LABEL
        columns = (
            multilabel.source_columns(args.text_column, args.label_column, args.slices, args.text_pair)
            if multi
            else Columns(args.text_column, args.label_column, args.slices, args.text_pair)
        )
        source = load_source(args.dataset, columns, tmp_dir / "snapshot")
        unlabelled_texts = (
            read_unlabelled(args.unlabelled, args.text_column) if args.unlabelled != NO_UNLABELLED else None
        )
        report = ValidationReport()
        if args.text_pair:
            check_pair_column(source.parts, report)
        parts_by_split = source.parts
        given = args.label_set
        if multi and given is None and multilabel.indicator_columns(args.label_column):
            # one 0/1 column per label: the labels are the columns, in the files' order
            indicators = multilabel.indicator_columns(args.label_column)
            given = LabelSet(indicators, indicators)
        if multi:  # the label lists parsed first; the shared checks then see each list as one value
            parts_by_split = {
                split: [
                    (
                        origin,
                        multilabel.parse_part(
                            frame, origin, report, args.label_column, args.label_delimiter, given
                        ),
                    )
                    for origin, frame in parts
                ]
                for split, parts in source.parts.items()
            }
        frames = {
            split: validate_parts(parts, split, report, None if multi else args.label_set)
            for split, parts in parts_by_split.items()
        }
        if multi:
            label_set = multilabel.resolve_multi_labels(frames, given, report)
        else:
            label_set = resolve_labels(
                frames,
                args.label_set,
                args.val_fraction,
                None if "test" in frames else args.test_fraction,
                report,
            )
        splits, dropped = {}, 0
        if label_set is not None and not report.errors:
            encoder = multilabel.encode if multi else encode
            frames = {split: encoder(frame, label_set) for split, frame in frames.items()}
            splits, dropped = make_splits(frames, source, args, report)
        report_path = tmp_dir / "validation_report.json"
        report_path.write_text(json.dumps(report.as_dict(), indent=2))
        mlflow.log_artifact(str(report_path))
        mlflow.log_metrics(report.metrics())
        report.raise_if_blocking()
        record_host_data(source, args.dataset)

        held_out = source.origin.get(
            "test", f"test_fraction={args.test_fraction} of {source.origin['train']}"
        )
        mlflow.log_params({"source": source.description, "test_source": held_out})
        mlflow.log_metrics(split_metrics(splits, label_set) | {"overlap_dropped_rows": dropped})
        logger.info("label set: %s", dict(zip(label_set.names, label_set.values, strict=True)))
        log_profile(splits, label_set, tmp_dir)
        log_schema(splits, label_set, tmp_dir, args.text_pair)
        check_drift(
            splits["train"],
            label_set,
            args.registered_model_name,
            args.drift_threshold,
            args.fail_on_drift,
            backbone_tokenizer(),
            tmp_dir,
        )
        log_lineage(splits, source)
        if args.label_audit:
            audit_labels(splits, label_set, args, tmp_dir)
        # Last, so that data/ and the label_names tag exist only for a run whose data passed every check.
        write_splits(splits, tmp_dir / DATA_ARTIFACT_DIR)
        if unlabelled_texts is not None:
            log_unlabelled(unlabelled_texts, splits, args, tmp_dir / DATA_ARTIFACT_DIR)
        mlflow.log_artifacts(str(tmp_dir / DATA_ARTIFACT_DIR), DATA_ARTIFACT_DIR)
        mlflow.set_tag(LABEL_NAMES_TAG, label_set.names_json())
        if args.text_pair:
            mlflow.set_tag(TEXT_PAIR_TAG, args.text_pair)
    logger.info("logged splits: %s", {name: len(frame) for name, frame in splits.items()})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("preprocess"):
        run(args)


if __name__ == "__main__":
    main()
