"""The promotion gate: the `champion` alias moves only to a version that beats the current champion."""

import logging

import mlflow

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"


def current_champion_score(name: str, metric: str) -> tuple[str | None, float | None]:
    """(version, score) of the current champion, or (None, None) when there is none."""
    client = mlflow.MlflowClient()
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except mlflow.exceptions.MlflowException:
        return None, None
    score = champion.tags.get(metric)
    return champion.version, float(score) if score is not None else None


def apply_gate(name: str, version: str, metric: str, score: float) -> bool:
    """Record `score` on the version; promote it when there is no champion or it scores strictly higher."""
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, version, metric, f"{score:.6f}")
    champion_version, champion_score = current_champion_score(name, metric)
    if champion_version == version:
        logger.info("version %s already is the champion", version)
        return True
    promote = champion_score is None or score > champion_score
    if promote:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        logger.info(
            "promoted %s version %s to %s (%s %.4f > %s)",
            name,
            version,
            CHAMPION_ALIAS,
            metric,
            score,
            "none" if champion_score is None else f"{champion_score:.4f}",
        )
    else:
        logger.info(
            "kept champion version %s (%s %.4f >= %.4f of version %s)",
            champion_version,
            metric,
            champion_score,
            score,
            version,
        )
    return promote
