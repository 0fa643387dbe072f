"""Drift of this run's train split against a reference train split.

The reference is the data the `champion` model was trained on (registered model -> alias champion ->
its run's recorded data run -> that preprocess run's data/train.parquet), else the newest successful
preprocess run of this experiment, else none (drift is then skipped). Statistics: label shift (total
variation distance, PSI over the N class shares, classes matched by name with the reference's label
set), token-length shift (PSI over fixed bins, two-sample KS statistic) and the rate of words unseen in
the reference. The PSIs and KS are held against `drift_threshold`. A reference with other classes has no
label shift to measure: the report says "label set changed" (and fail_on_drift fails on it).
"""

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from tokenizers import Tokenizer

from sentclf.contract import CHAMPION_ALIAS, TRAIN_RUN_TAG
from sentclf.data import read_label_set, read_split
from sentclf.drift_math import LENGTH_BIN_EDGES, ks_statistic, psi, total_variation
from sentclf.schema import LABEL_COLUMN, LabelSet
from sentclf.tracking import StepInputError, newest_successful_run, version_data_run_id

from label_lists import label_counts
from text_pairs import model_texts

GATED_STATISTICS = ("drift_label_psi", "drift_length_psi", "drift_length_ks")
LABEL_SET_CHANGED = "label set changed"
WORD = re.compile(r"\w+(?:'\w+)*")
REPORT_NEW_WORDS = 50

logger = logging.getLogger(__name__)


@dataclass
class Reference:
    kind: str  # champion | previous | none
    description: str
    data_run_id: str | None = None
    train: pd.DataFrame | None = None
    label_set: LabelSet | None = None  # the classes the reference's label indexes mean


def champion_reference(model_name: str) -> Reference | None:
    """The train split the current champion was trained on, or None (no model, alias or readable data)."""
    if not model_name.strip():
        return None
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
        train_run_id = version.run_id or version.tags.get(TRAIN_RUN_TAG)
        data_run_id = version_data_run_id(model_name, version.version)
        if not data_run_id:
            logger.info(
                "champion %s v%s has no data_run_id: no champion reference", model_name, version.version
            )
            return None
        train = read_split(data_run_id, "train")
        label_set = read_label_set(data_run_id)
    except (MlflowException, StepInputError) as error:
        logger.info("no champion reference for %s: %s", model_name, str(error).splitlines()[0])
        return None
    description = (
        f"champion {model_name} v{version.version} (train run {train_run_id}, data run {data_run_id})"
    )
    return Reference(CHAMPION_ALIAS, description, data_run_id, train, label_set)


def previous_reference(current_run_id: str) -> Reference | None:
    """The newest successful preprocess run of this experiment other than this one, or None."""
    try:
        previous = newest_successful_run("preprocess")
    except StepInputError:
        logger.info("no earlier successful preprocess run in this experiment")
        return None
    if previous.info.run_id == current_run_id:
        return None
    try:
        train = read_split(previous.info.run_id, "train")
        label_set = read_label_set(previous.info.run_id)
    except (MlflowException, StepInputError) as error:
        logger.info("previous preprocess run %s unusable as reference: %s", previous.info.run_id, error)
        return None
    run_id = previous.info.run_id
    return Reference("previous", f"previous successful preprocess run {run_id}", run_id, train, label_set)


def find_reference(model_name: str, current_run_id: str) -> Reference:
    return (
        champion_reference(model_name)
        or previous_reference(current_run_id)
        or Reference("none", "no champion and no earlier successful preprocess run")
    )


def label_shares(frame: pd.DataFrame, label_set: LabelSet) -> dict[str, float]:
    """Class name -> share of the rows, in class-index order."""
    counts = label_counts(frame[LABEL_COLUMN], label_set.size)  # multi-label: each label's rows
    return dict(zip(label_set.names, (counts / counts.sum()).tolist(), strict=True))


def label_drift(
    current: pd.DataFrame, current_labels: LabelSet, reference: pd.DataFrame, reference_labels: LabelSet
) -> tuple[dict[str, float], dict]:
    """(statistics, report section): the label shift over the classes matched by name; with another set
    of classes in the reference, no statistics and a "label set changed" section."""
    shares = {
        "current": label_shares(current, current_labels),
        "reference": label_shares(reference, reference_labels),
    }
    if set(current_labels.names) != set(reference_labels.names):
        change = {
            "change": LABEL_SET_CHANGED,
            "reference": list(reference_labels.names),
            "current": list(current_labels.names),
            "added": [name for name in current_labels.names if name not in reference_labels.names],
            "removed": [name for name in reference_labels.names if name not in current_labels.names],
        }
        return {}, {"label_set": change, "label_shares": shares}
    names = current_labels.names
    vectors = {side: np.array([values[name] for name in names]) for side, values in shares.items()}
    statistics = {
        "drift_label_tvd": total_variation(vectors["reference"], vectors["current"]),
        "drift_label_psi": psi(vectors["reference"], vectors["current"]),
    }
    return statistics, {"label_shares": shares}


def token_lengths(frame: pd.DataFrame, tokenizer: Tokenizer) -> np.ndarray:
    encodings = tokenizer.encode_batch(model_texts(frame).tolist(), add_special_tokens=False)
    return np.array([len(encoding.ids) for encoding in encodings])


def length_shares(lengths: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(lengths, bins=LENGTH_BIN_EDGES)
    return counts / counts.sum()


def words(frame: pd.DataFrame) -> list[str]:
    return [word for text in model_texts(frame) for word in WORD.findall(text.lower())]


def vocabulary_drift(current: pd.DataFrame, reference: pd.DataFrame) -> tuple[dict[str, float], set[str]]:
    """Shares of this split's word types, and of its running words, unseen in the reference."""
    current_words, known = words(current), set(words(reference))
    new_types = set(current_words) - known
    rates = {
        "drift_new_vocab_rate": len(new_types) / max(len(set(current_words)), 1),
        "drift_new_token_rate": sum(word not in known for word in current_words) / max(len(current_words), 1),
    }
    return rates, new_types


def drift_statistics(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    tokenizer: Tokenizer,
    current_labels: LabelSet,
    reference_labels: LabelSet,
) -> dict:
    """Statistics (flat, for metrics) and the distributions they compare (for the report)."""
    label_statistics, label_section = label_drift(current, current_labels, reference, reference_labels)
    lengths = {"current": token_lengths(current, tokenizer), "reference": token_lengths(reference, tokenizer)}
    bins = {name: length_shares(values) for name, values in lengths.items()}
    vocabulary, new_types = vocabulary_drift(current, reference)
    return {
        "statistics": label_statistics
        | {
            "drift_length_psi": psi(bins["reference"], bins["current"]),
            "drift_length_ks": ks_statistic(lengths["current"], lengths["reference"]),
        }
        | vocabulary,
        **label_section,
        "length_bins": {"edges": [str(edge) for edge in LENGTH_BIN_EDGES]}
        | {name: shares.tolist() for name, shares in bins.items()},
        "new_words_examples": sorted(new_types)[:REPORT_NEW_WORDS],
    }


def drift_report(
    train: pd.DataFrame,
    label_set: LabelSet,
    reference: Reference,
    threshold: float,
    fail: bool,
    tokenizer: Tokenizer,
) -> dict:
    report: dict = {"reference": {"kind": reference.kind, "description": reference.description}}
    if reference.train is None or reference.label_set is None:
        logger.info("no drift reference (%s): drift skipped", reference.description)
        return report
    report |= drift_statistics(train, reference.train, tokenizer, label_set, reference.label_set)
    exceeded = {k: v for k, v in report["statistics"].items() if k in GATED_STATISTICS and v > threshold}
    logger.info("drift against the %s: %s", reference.description, report["statistics"])
    return report | {"threshold": threshold, "fail_on_drift": fail, "exceeded": exceeded}


def enforce_threshold(report: dict, reference: Reference, threshold: float, fail: bool) -> None:
    change = report.get("label_set")
    if not report.get("exceeded") and not change:
        return
    findings = []
    if change:
        findings.append(
            f"{LABEL_SET_CHANGED} (added {change['added'] or 'none'}, removed {change['removed'] or 'none'})"
        )
    if report.get("exceeded"):
        summary = ", ".join(f"{k}={v:.3f}" for k, v in report["exceeded"].items())
        findings.append(f"{summary} > drift_threshold={threshold}")
    message = f"data drift against the {reference.description}: {'; '.join(findings)}"
    if fail:
        raise StepInputError(
            f"{message}; nothing was logged as data (see drift_report.json). If the change is intended, "
            "rerun with -P fail_on_drift=false or a higher drift_threshold"
        )
    logger.warning("%s (fail_on_drift=false: continuing)", message)


def check_drift(
    train: pd.DataFrame,
    label_set: LabelSet,
    model_name: str,
    threshold: float,
    fail: bool,
    tokenizer: Tokenizer,
    work_dir: Path,
) -> dict:
    """Find the reference, log drift metrics and drift_report.json, then fail on drift if asked to."""
    reference = find_reference(model_name, mlflow.active_run().info.run_id)
    mlflow.log_params(
        {"drift_reference": reference.kind}
        | ({"drift_reference_run_id": reference.data_run_id} if reference.data_run_id else {})
    )
    report = drift_report(train, label_set, reference, threshold, fail, tokenizer)
    if "statistics" in report:
        mlflow.log_metrics(report["statistics"] | {"drift_label_set_changed": float("label_set" in report)})
    path = work_dir / "drift_report.json"
    path.write_text(json.dumps(report, indent=2))
    mlflow.log_artifact(str(path))
    enforce_threshold(report, reference, threshold, fail)
    return report
