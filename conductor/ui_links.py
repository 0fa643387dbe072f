"""Links into the MLflow UI that land where a person wants to look: the pipeline experiment's runs.

MLflow 3.17's UI opens every experiment in its GenAI mode (an overview of traces) unless the link says
`workflowType=machine_learning` or the browser has been switched to "Model training" once: in this
version the experiment's own `mlflow.experimentKind` tag does not decide it. So `make ui` prints a link
with that parameter, and the conductor logs one for the pipeline run it just finished.
Run as `python -m conductor.ui_links [ui address]` (what `make ui` does).
"""

import argparse
import os
import urllib.parse

import mlflow

ML_VIEW = "workflowType=machine_learning"


def default_ui() -> str:
    """Where a person opens the runs: a tracking server is its own UI; otherwise `make ui`'s address
    (127.0.0.1:5000, or UI_PORT's port)."""
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith(("http://", "https://")):
        return tracking.rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('UI_PORT', '5000')}"


DEFAULT_UI = default_ui()


def runs_link(ui: str, experiment_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{ML_VIEW}"


def run_link(ui: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    tail = f"/artifacts/{urllib.parse.quote(artifact)}" if artifact else ""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{tail}?{ML_VIEW}"


def experiment_link(ui: str, experiment_name: str | None = None) -> str:
    """The runs of the named experiment (default: MLFLOW_EXPERIMENT_NAME), or the experiment list when
    it does not exist yet."""
    name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME", "")
    experiment = mlflow.MlflowClient().get_experiment_by_name(name) if name else None
    if experiment is None:
        return f"{ui.rstrip('/')}/#/experiments?{ML_VIEW}"
    return runs_link(ui, experiment.experiment_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ui", nargs="?", default=DEFAULT_UI, help=f"the UI's address (default {DEFAULT_UI})")
    args = parser.parse_args(argv)
    print(f"The pipeline's runs: {experiment_link(args.ui)}")


if __name__ == "__main__":
    main()
