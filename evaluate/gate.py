"""The promotion gate: `champion` moves only to a version that beats the current champion beyond noise,
judged on the same test rows, and only after an evaluation that completed.

Every check must hold, and each is logged as a reason:
- floor: the challenger's test MCC >= min_mcc;
- latency: its p99 one request at a time <= latency_budget_ms;
- delta: its MCC >= the champion's + min_delta, both on this run's test rows (only with min_delta > 0);
- confidence: its MCC is higher than the champion's in at least `confidence` of the paired bootstrap
  resamples (evaluate/stats.py).
Floor, latency and delta are MLflow's own `MetricThreshold` checks (mlflow.validate_evaluation_results);
the paired bootstrap is what those lack. Without a champion, only floor and latency apply.
"""

import logging
from dataclasses import dataclass

import mlflow
from mlflow.models import MetricThreshold
from mlflow.models.evaluation import EvaluationResult
from mlflow.models.evaluation.validation import ModelValidationFailedException

from sentclf.contract import (
    CHAMPION_ALIAS,
    GATE_DECISION_TAG,
    GATE_KEPT,
    GATE_PROMOTED,
    GATE_SUMMARY_TAG,
)
from sentclf.tracking import version_model_id

from stats import PairedComparison

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateConfig:
    min_delta: float
    confidence: float
    latency_budget_ms: float
    min_mcc: float


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.name} {'passed' if self.passed else 'failed'}: {self.detail}"


@dataclass(frozen=True)
class Decision:
    promote: bool
    checks: tuple[Check, ...]
    reasons: str  # why, without the verdict: `no champion yet; every check passed`

    @property
    def verdict(self) -> str:
        return GATE_PROMOTED if self.promote else GATE_KEPT

    @property
    def summary(self) -> str:
        """One line, for logs, tags and the retrain summary: `promoted (no champion yet; ...)`."""
        return f"{self.verdict} ({self.reasons})"


def current_champion(name: str) -> str | None:
    """The version that holds `champion`, or None."""
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION_ALIAS).version)
    except mlflow.exceptions.MlflowException:
        return None


def mlflow_check(
    name: str, threshold: MetricThreshold, candidate: dict, baseline: dict | None, detail: str
) -> Check:
    """One MetricThreshold through mlflow.validate_evaluation_results, as a Check."""
    metric = next(iter(candidate))
    try:
        mlflow.validate_evaluation_results(
            {metric: threshold},
            EvaluationResult(candidate, {}),
            EvaluationResult(baseline, {}) if baseline is not None else None,
        )
    except ModelValidationFailedException:
        return Check(name, False, detail)
    return Check(name, True, detail)


def decide(
    config: GateConfig,
    challenger_mcc: float,
    latency_p99_ms: float,
    champion_mcc: float | None = None,
    comparison: PairedComparison | None = None,
) -> Decision:
    """The gate's verdict on a challenger (with the champion's scores on the same rows, if any)."""
    checks = [
        mlflow_check(
            "floor",
            MetricThreshold(threshold=config.min_mcc, greater_is_better=True),
            {"mcc": challenger_mcc},
            None,
            f"test MCC {challenger_mcc:.4f} vs min_mcc {config.min_mcc:.4f}",
        ),
        mlflow_check(
            "latency",
            MetricThreshold(threshold=config.latency_budget_ms, greater_is_better=False),
            {"latency_p99_ms": latency_p99_ms},
            None,
            f"p99 at concurrency 1 {latency_p99_ms:.1f} ms vs budget {config.latency_budget_ms:.1f} ms",
        ),
    ]
    if champion_mcc is not None and comparison is not None:
        if config.min_delta > 0:
            checks.append(
                mlflow_check(
                    "delta",
                    MetricThreshold(min_absolute_change=config.min_delta, greater_is_better=True),
                    {"mcc": challenger_mcc},
                    {"mcc": champion_mcc},
                    f"ΔMCC {comparison.delta_mcc} vs min_delta {config.min_delta:.4f}",
                )
            )
        checks.append(
            Check(
                "confidence",
                comparison.share_better >= config.confidence,
                f"challenger better in {comparison.share_better:.1%} of {comparison.resamples} paired "
                f"resamples vs confidence {config.confidence:.0%} (ΔMCC {comparison.delta_mcc})",
            )
        )
    promote = all(check.passed for check in checks)
    failed = [str(check) for check in checks if not check.passed]
    against = "no champion yet" if champion_mcc is None else f"champion MCC {champion_mcc:.4f}"
    reasons = f"{against}; every check passed" if promote else f"{against}; {'; '.join(failed)}"
    return Decision(promote, tuple(checks), reasons)


def apply(decision: Decision, name: str, version: str) -> None:
    """Move `champion` to the version when the decision says so; otherwise leave every alias alone."""
    if decision.promote:
        mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION_ALIAS, version)
        logger.info("promoted %s version %s to %s: %s", name, version, CHAMPION_ALIAS, decision.summary)
    else:
        logger.info("%s version %s not promoted: %s", name, version, decision.summary)


def record(
    metrics: dict[str, float], model_name: str, version: str, decision: Decision, champion_before: str | None
) -> None:
    """The evaluation's metrics on the active run and on the version's own model page (MLflow 3's logged
    model, so that they are read where the model is), and the gate's decision and checks as run tags."""
    mlflow.log_metrics(metrics)
    model_id = version_model_id(model_name, version)
    if model_id:
        mlflow.log_metrics(metrics, model_id=model_id)
    mlflow.set_tags(
        {
            GATE_DECISION_TAG: decision.verdict,
            GATE_SUMMARY_TAG: decision.summary,
            "promoted_to_champion": str(decision.promote).lower(),
            "champion_before": champion_before or "-",
        }
        | {f"gate.check.{check.name}": str(check) for check in decision.checks}
    )
