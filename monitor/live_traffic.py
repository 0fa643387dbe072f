"""`-P feedback=<folder>`: the versions that answered in the window, judged on the labels that came back
(sentclf.live), logged on the run and on each version's model, and drawn in the report."""

import logging
from pathlib import Path

import mlflow
import pandas as pd

from sentclf.contract import CHALLENGER_ALIAS, CHAMPION_ALIAS, VERSION_FIELD
from sentclf.feedback import MAX_PROBLEMS, FeedbackError, read_feedback
from sentclf.live import LiveEvidence, alias_version, live_evidence, log_on_models, run_metrics, served_names
from sentclf.tracking import StepInputError
from sentclf.traffic import read_capture

from lineage import ModelInputs, feedback_folder

logger = logging.getLogger("monitor")
SHOWN_PROBLEMS = 10


def judge(
    feedback: str, capture: Path, window: pd.DataFrame, windowed: bool, model: ModelInputs
) -> LiveEvidence:
    """The live evidence of `window` with the labels in `feedback`; labels for this model's requests
    captured before the window are counted apart, not as unknown ids."""
    folder = feedback_folder(feedback)
    versions = sorted(set(window[VERSION_FIELD].astype(str))) if VERSION_FIELD in window else []
    names = served_names(model.name, {*versions, model.version})
    try:
        labels = read_feedback(folder, model.labels, sorted(names))
    except FeedbackError as error:
        raise StepInputError(str(error)) from None
    before = None
    if windowed:
        everything = read_capture(capture, None)
        before = everything[everything["time"] < window["time"].min()]
    evidence = live_evidence(
        window,
        labels,
        model.name,
        names,
        len(model.labels),
        champion=alias_version(model.name, CHAMPION_ALIAS),
        challenger=alias_version(model.name, CHALLENGER_ALIAS),
        before_window=before,
    )
    for note in evidence.notes():
        logger.info("live: %s", note)
    for problem in evidence.feedback.problems[:SHOWN_PROBLEMS]:
        logger.warning("feedback refused: %s", problem)
    hidden = sum(evidence.feedback.refused.values()) - min(SHOWN_PROBLEMS, len(evidence.feedback.problems))
    if hidden > 0:
        logger.warning(
            "feedback refused: %d more (monitor/verdict.json lists the first %d)", hidden, MAX_PROBLEMS
        )
    for line in evidence.lines():
        logger.info("live: %s", line)
    return evidence


def log_evidence(evidence: LiveEvidence) -> None:
    """On the monitor's run (`live_v<n>_...`) and on each version's model (`live_...`)."""
    mlflow.log_metrics(run_metrics(evidence))
    logged = log_on_models(evidence)
    mlflow.set_tags(
        {
            "live.versions": ",".join(evidence.versions) or "none",
            "live.labels": str(evidence.joined.get("used", 0)),
            "live.models_logged": ",".join(logged) or "none",
        }
    )
