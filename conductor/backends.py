"""How a step is launched: the Backend protocol and its two implementations, chosen by `-P backend=` or
SENTCLF_BACKEND. `local` runs each step in a container of this machine's Docker engine
(conductor.local_backend); `kubernetes` runs each as a Job in a cluster (conductor.kube, whose client
library is imported only then; kubernetes/README.md)."""

import os
from pathlib import Path
from typing import Protocol

from mlflow.entities import Run

from conductor.local_backend import LocalBackend, StepFailed

__all__ = ["BACKENDS", "BACKEND_ENV", "Backend", "StepFailed", "make_backend", "resolve_backend_name"]

# `-P backend=kubernetes`, or this variable when the parameter is left at `local`.
BACKEND_ENV = "SENTCLF_BACKEND"
BACKENDS = ("local", "kubernetes")


class Backend(Protocol):
    """Runs a step to its end: returns the step's finished run, raises RuntimeError on failure."""

    def run_step(self, step: str, parameters: dict[str, str], run_name: str) -> Run: ...


def resolve_backend_name(parameter: str) -> str:
    """The backend asked for: the parameter, or SENTCLF_BACKEND when the parameter is the default."""
    name = os.environ.get(BACKEND_ENV, "local") if parameter == "local" else parameter
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (or {BACKEND_ENV}), got {name!r}")
    return name


def make_backend(name: str, project_dir: Path, pipeline_run_id: str) -> Backend:
    if name == "kubernetes":
        from conductor.kube import KubernetesBackend, KubeSettings

        return KubernetesBackend(project_dir, KubeSettings.from_env())
    return LocalBackend(project_dir, pipeline_run_id)
