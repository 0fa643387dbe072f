"""Shared fixtures: a throw-away MLflow tracking store, and access to each step's own modules."""

import os
import shutil
import sys
from pathlib import Path

import mlflow
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
UNDER_CI = os.environ.get("CI", "").lower() == "true"

# Each step imports its modules by bare name from its own directory, as it does when it runs.
for step in ("preprocess", "train", "building", "evaluate"):
    sys.path.insert(0, str(REPO_ROOT / step))
# The Kubernetes room's package (sentclf_kube), as main.py imports it: kubernetes/ itself is no package.
sys.path.insert(0, str(REPO_ROOT / "kubernetes"))


def docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


def require_docker() -> None:
    """Skip without an engine on a laptop; under CI a missing engine is a failure, never a skip."""
    if docker_available():
        return
    if UNDER_CI:
        pytest.fail("CI=true but no Docker engine answers: .ci/run must install and start one")
    pytest.skip("no Docker engine answers")


@pytest.fixture
def tracking_store(tmp_path, monkeypatch):
    """A fresh sqlite tracking store and an experiment whose artifacts live under tmp_path."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment("test", artifact_location=str(tmp_path / "artifacts"))
    mlflow.set_experiment(experiment_id=experiment_id)
    yield experiment_id
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    shutil.rmtree(tmp_path / "artifacts", ignore_errors=True)
