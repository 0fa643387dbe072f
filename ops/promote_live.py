"""Promotion from live evidence: move `champion` to the challenger only when, on the labelled requests both
answered in shadow traffic, the paired comparison passes the offline gate's checks.

    python -m ops.promote_live --traffic <capture folder> --feedback <labels folder> [--model NAME]

The champion and the challenger are the registered model's aliases; the capture (the server's CAPTURE_DIR)
says what each answered, the feedback folder what the right answers were (sentclf.feedback). The rule is
sentclf.live.decide_live: at least --min-labels labelled sentences both versions answered ("kept: N
labelled requests, need M" below that), the challenger's live MCC >= min_mcc, ΔMCC >= min_delta (when > 0),
and the challenger better in >= confidence of the paired bootstrap resamples. The gate's thresholds,
resamples and seed default to the evaluate step's (evaluate/MLproject), so the live gate and the offline
gate say the same thing on the same evidence.

Recorded as a run (`sentclf.step=promote_live`: the decision, each reason, every version's live figures),
as tags `live.decision` / `live.summary` on the challenger's version, and each version's live figures on
its model. Prints each version's figures and, last, `live promotion: <summary>`. Exit 0 whether promoted
or kept; 1 on bad input (a missing folder, no such model). `--dry-run` decides and records but moves no
alias. `--summary-file` writes the decision as JSON for the nightly loop (ops.nightly).
"""

import argparse
import json
import logging
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import mlflow

from conductor.parameters import PROJECT_DIR, declared, typed_default
from sentclf.contract import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    DEFAULT_MODEL_NAME,
    GATE_KEPT,
    GATE_PROMOTED,
    LIVE_DECISION_TAG,
    LIVE_SUMMARY_TAG,
)
from sentclf.feedback import FeedbackError, read_feedback
from sentclf.live import (
    LiveDecision,
    LiveEvidence,
    LiveRule,
    alias_version,
    decide_live,
    label_names_of,
    live_evidence,
    log_on_models,
    run_metrics,
    served_names,
)
from sentclf.schema import COLA_LABEL_NAMES
from sentclf.tracking import StepInputError, record_inputs, step_run
from sentclf.traffic import parse_since, read_capture

logger = logging.getLogger("promote_live")
STEP = "promote_live"
DEFAULT_MIN_LABELS = 200


def gate_defaults() -> dict[str, object]:
    """The evaluate step's gate parameters, as its MLproject declares them."""
    spec = declared(PROJECT_DIR / "evaluate")
    names = ("confidence", "min_delta", "min_mcc", "bootstrap_resamples", "seed")
    return {name: typed_default(spec[name]) for name in names}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    gate = gate_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m ops.promote_live",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--traffic", required=True, help="the server's capture folder (CAPTURE_DIR)")
    parser.add_argument("--feedback", required=True, help="the folder of labels that came back")
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME, help="the registered model's name")
    parser.add_argument("--since", default="all", help="the capture window: 24h, 7d, ... or all")
    parser.add_argument("--min-labels", type=int, default=DEFAULT_MIN_LABELS)
    parser.add_argument("--confidence", type=float, default=gate["confidence"])
    parser.add_argument("--min-delta", type=float, default=gate["min_delta"])
    parser.add_argument("--min-mcc", type=float, default=gate["min_mcc"])
    parser.add_argument("--resamples", type=int, default=gate["bootstrap_resamples"])
    parser.add_argument("--seed", type=int, default=gate["seed"])
    parser.add_argument("--dry-run", action="store_true", help="decide and record, but move no alias")
    parser.add_argument("--summary-file", type=Path, help="write the decision as JSON here")
    return parser.parse_args(argv)


def folder(value: str, what: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise StepInputError(f"--{what} {value}: no such folder ({path})")
    return path


def gather(args: argparse.Namespace) -> tuple[LiveEvidence, str | None, str | None]:
    """The evidence on the champion and the challenger of `args.model`."""
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(args.model)
    except mlflow.exceptions.MlflowException:
        raise StepInputError(f"--model {args.model}: no such registered model in this store") from None
    champion = alias_version(args.model, CHAMPION_ALIAS)
    challenger = alias_version(args.model, CHALLENGER_ALIAS)
    versions = [v for v in (champion, challenger) if v]
    tags = client.get_model_version(args.model, versions[0]).tags if versions else {}
    label_names = label_names_of(tags, COLA_LABEL_NAMES)
    names = served_names(args.model, versions)
    capture = folder(args.traffic, "traffic")
    try:
        since = parse_since(args.since)
        labels = read_feedback(folder(args.feedback, "feedback"), label_names, sorted(names))
    except (ValueError, FeedbackError) as error:
        raise StepInputError(str(error)) from None
    everything = read_capture(capture, None)
    window, before = everything, None
    if since is not None and not everything.empty:
        start = datetime.now(UTC) - since  # as the monitor's window: the newest `since`
        window, before = everything[everything["time"] >= start], everything[everything["time"] < start]
    evidence = live_evidence(
        window,
        labels,
        args.model,
        names,
        len(label_names),
        champion,
        challenger,
        before,
        resamples=args.resamples,
        seed=args.seed,
    )
    return evidence, champion, challenger


def record(decision: LiveDecision, evidence: LiveEvidence, args: argparse.Namespace) -> None:
    """The run's metrics and tags, the figures on each version's model, the tags on the challenger."""
    mlflow.log_metrics(run_metrics(evidence))
    log_on_models(evidence)
    outcome = GATE_PROMOTED if decision.promote and not args.dry_run else GATE_KEPT
    mlflow.set_tags(
        {
            LIVE_DECISION_TAG: outcome,
            LIVE_SUMMARY_TAG: decision.summary,
            "live.champion_before": decision.champion or "-",
            "live.challenger": decision.challenger or "-",
            "live.dry_run": str(args.dry_run).lower(),
        }
        | {f"live.reason.{i}": reason[:5000] for i, reason in enumerate(decision.reasons)}
    )
    mlflow.log_dict(
        {"decision": asdict(decision), "evidence": evidence.as_dict(), "rule": vars(rule_of(args))},
        "promote_live/decision.json",
    )
    if decision.challenger:
        client = mlflow.MlflowClient()
        client.set_model_version_tag(args.model, decision.challenger, LIVE_DECISION_TAG, outcome)
        client.set_model_version_tag(args.model, decision.challenger, LIVE_SUMMARY_TAG, decision.summary)


def rule_of(args: argparse.Namespace) -> LiveRule:
    return LiveRule(args.confidence, args.min_delta, args.min_mcc, args.min_labels)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with step_run(STEP):
        record_inputs(model=args.model, traffic=str(args.traffic), feedback=str(args.feedback))
        evidence, champion, challenger = gather(args)
        decision = decide_live(evidence, rule_of(args), champion, challenger)
        record(decision, evidence, args)
        if decision.promote and not args.dry_run:
            mlflow.MlflowClient().set_registered_model_alias(args.model, CHAMPION_ALIAS, decision.challenger)
            logger.info("moved %s of %s to version %s", CHAMPION_ALIAS, args.model, decision.challenger)
        for reason in decision.reasons:
            logger.info("reason: %s", reason)
        lines = evidence.lines()
        summary = decision.summary + (
            " (dry run: no alias moved)" if args.dry_run and decision.promote else ""
        )
        if args.summary_file:
            args.summary_file.write_text(
                json.dumps(
                    {"promoted": decision.promote and not args.dry_run, "summary": summary, "lines": lines}
                )
            )
        for line in lines:
            print(f"live {args.model} {line}")
        print(f"live promotion: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
