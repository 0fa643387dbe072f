"""Tracking helpers: open a step's run, find other runs and their artifacts through the MLflow API."""

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.entities import Run

STEP_TAG = "sentclf.step"
LOG_ARTIFACT_DIR = "logs"

logger = logging.getLogger(__name__)


class StepInputError(ValueError):
    """A step was given input it cannot use; the message names the problem and the fix."""


def configure_logging(level: int = logging.INFO) -> None:
    """One log format for every step, on stderr so it interleaves with MLflow's own lines."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )


@contextlib.contextmanager
def step_run(step: str) -> Iterator[Run]:
    """Open (or join, under `mlflow run`) the step's run, tag it, and log its log file on every exit.

    The log is an artifact so that a failed step can be diagnosed from `mlflow ui` alone. A
    StepInputError ends the run FAILED with its message and exit status 1, without a traceback.
    """
    configure_logging()
    log_dir = tempfile.mkdtemp(prefix=f"sentclf-{step}-log-")
    log_path = Path(log_dir) / f"{step}.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        with mlflow.start_run() as run:
            mlflow.set_tag(STEP_TAG, step)
            logger.info("%s: run %s in experiment %s", step, run.info.run_id, run.info.experiment_id)
            try:
                yield run
            except StepInputError as error:
                # Bad input is the user's to fix: the message says how, a traceback would bury it.
                logger.error("%s: %s", step, error)
                raise SystemExit(f"{step}: {error}") from None
            except Exception:
                logger.exception("%s failed", step)
                raise
            finally:
                handler.flush()
                with contextlib.suppress(Exception):
                    mlflow.log_artifact(str(log_path), LOG_ARTIFACT_DIR)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        log_path.unlink(missing_ok=True)
        os.rmdir(log_dir)


def newest_successful_run(step: str, experiment_id: str | None = None) -> Run:
    """The most recent FINISHED run of `step` in the experiment (default: the active one)."""
    if experiment_id is None:
        active = mlflow.active_run()
        experiment_id = active.info.experiment_id if active else None
    if experiment_id is None:
        raise StepInputError("no experiment to search: start a run or pass the run id explicitly")
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{STEP_TAG}` = '{step}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise StepInputError(
            f"no successful {step} run in experiment {experiment_id}: run `mlflow run {step}` "
            f"first or pass its run id (e.g. -P data_run_id=<id>)"
        )
    return runs[0]


def get_finished_run(run_id: str, step: str) -> Run:
    """The run `run_id`, checked to be a FINISHED run of `step` so a failed one is never consumed."""
    try:
        run = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as error:
        raise StepInputError(f"run id {run_id!r} not found in the tracking store: {error.message}") from None
    run_step = run.data.tags.get(STEP_TAG)
    if run_step != step:
        raise StepInputError(f"run {run_id} is a {run_step or 'non-pipeline'} run, not a {step} run")
    if run.info.status != "FINISHED":
        raise StepInputError(f"{step} run {run_id} has status {run.info.status}; only FINISHED runs are used")
    return run


def resolve_step_run(run_id: str, step: str) -> Run:
    """`run_id` if given, else the newest successful run of `step` in the active experiment."""
    if run_id:
        return get_finished_run(run_id, step)
    run = newest_successful_run(step)
    logger.info("using the newest successful %s run %s", step, run.info.run_id)
    return run


def download_artifacts(run_id: str, artifact_path: str, dst_dir: str | os.PathLike) -> Path:
    """Download one artifact (file or directory) of a run; a clear error when it is not there."""
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst_dir)
        )
    except (OSError, mlflow.exceptions.MlflowException) as error:
        raise StepInputError(
            f"artifact {artifact_path!r} of run {run_id} cannot be read ({error}). If the steps run in "
            "containers, the artifact root must be mounted at its host path (see the step's MLproject)."
        ) from None
    return Path(local)
