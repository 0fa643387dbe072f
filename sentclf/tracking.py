"""Tracking helpers: open a step's run, find other runs and their artifacts through the MLflow API."""

import contextlib
import importlib.util
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.entities import Run

from sentclf.contract import (
    INPUT_DATA_RUN_TAG,
    MODELS_URI_SCHEME,
    STEP_TAG,
    TRAIN_RUN_TAG,
    input_tag,
    parse_model_uri,
)

RUN_NAME_TAG = "mlflow.runName"
LOG_ARTIFACT_DIR = "logs"
# MLflow 3's UI decides an experiment's landing page by this tag; without it, it may infer GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
ML_EXPERIMENT_KIND = "custom_model_development"
# Seconds between system-metrics samples (MLflow's default, 10, leaves a short step with none).
SYSTEM_METRICS_INTERVAL_S = 5

logger = logging.getLogger(__name__)


class StepExit(SystemExit):
    """Exit status 1 for a step whose input was bad; its message (already logged) is `str()` of it, not
    the exit code, so Python does not print it a second time."""

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StepInputError(ValueError):
    """A step was given input it cannot use; the message names the problem and the fix."""


class StepError(RuntimeError):
    """A step failed in a way its message explains in full (a server that died, a parity miss): the run
    ends FAILED with the message, and no traceback buries it."""


def configure_logging(level: int = logging.INFO) -> None:
    """One log format for every step, on stderr so it interleaves with MLflow's own lines."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )


class StepCancelled(BaseException):
    """SIGTERM or Ctrl-C reached the step (a cancelled pipeline, `timeout`, a closing terminal).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` in a step swallows it."""


def raise_cancelled(signum: int, frame: object) -> None:
    """A SIGTERM handler: the signal becomes StepCancelled (for a step, the conductor, tune alike)."""
    raise StepCancelled(f"signal {signal.Signals(signum).name}")


def mark_ml_experiment(experiment_id: str) -> None:
    """Tag the experiment as classic ML so that MLflow 3's UI opens it on its runs, not on the GenAI
    overview it picks for experiments of no declared kind."""
    client = mlflow.MlflowClient()
    if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != ML_EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND)


@contextlib.contextmanager
def step_run(step: str) -> Iterator[Run]:
    """Open (or join, under `mlflow run`) the step's run, name and tag it, and log its log file on every
    exit.

    The log is an artifact so that a failed step can be diagnosed from `mlflow ui` alone. A
    StepInputError ends the run FAILED with its message and exit status 1, without a traceback. SIGTERM
    (which a container's PID 1 would otherwise ignore) and Ctrl-C end it KILLED with exit status 143, so a
    cancelled step stops within seconds and never goes on to register or promote anything.
    """
    configure_logging()
    # Until the run is open, a signal is only noted: raised in the middle of MLflow's own imports or its
    # store set-up, it would leave the run RUNNING and untagged. Acted on as soon as the run is open.
    noted: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum))
    log_dir = tempfile.mkdtemp(prefix=f"sentclf-{step}-log-")
    log_path = Path(log_dir) / f"{step}.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    enable_system_metrics()
    run = mlflow.start_run()
    status = "FAILED"
    try:
        mlflow.set_tags({STEP_TAG: step, RUN_NAME_TAG: step})
        signal.signal(signal.SIGTERM, raise_cancelled)
        if noted:
            raise_cancelled(noted[0], None)
        mark_ml_experiment(run.info.experiment_id)
        logger.info("%s: run %s in experiment %s", step, run.info.run_id, run.info.experiment_id)
        yield run
        status = "FINISHED"
    except (StepInputError, StepError) as error:
        # Bad input is the user's to fix: the message says how, a traceback would bury it. Logged once
        # (the log goes to the terminal and to the run's log artifact), so the exit carries no message.
        logger.error("%s: %s", step, error)
        raise StepExit(f"{step}: {error}") from None
    except (StepCancelled, KeyboardInterrupt) as cancel:
        status = "KILLED"
        logger.error("%s: cancelled (%s); the run ends KILLED", step, cancel or "Ctrl-C")
        raise SystemExit(143) from None
    except BaseException:
        logger.exception("%s failed", step)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second signal during clean-up ends it at once
        handler.flush()
        with contextlib.suppress(Exception):
            mlflow.log_artifact(str(log_path), LOG_ARTIFACT_DIR)
        mlflow.end_run(status)
        logging.getLogger().removeHandler(handler)
        handler.close()
        log_path.unlink(missing_ok=True)
        os.rmdir(log_dir)


def enable_system_metrics() -> bool:
    """MLflow's system metrics (CPU, memory, disk, network of the step's machine) for the runs this process
    starts: the run page's System metrics tab. Needs psutil (in the step image); without it, a log line."""
    if importlib.util.find_spec("psutil") is None:
        logger.info("system metrics are off: psutil is not installed")
        return False
    mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    mlflow.enable_system_metrics_logging()
    return True


def version_model_id(model_name: str, version: str) -> str | None:
    """The MLflow 3 logged model (model_id) a registered version points to: metrics logged against it show
    on the model's page. None for a version registered from a plain run artifact."""
    model_version = mlflow.MlflowClient().get_model_version(model_name, version)
    if getattr(model_version, "model_id", None):
        return model_version.model_id
    # MLflow 3.17's SQL store leaves model_id unset on the version; its source names the logged model.
    source = model_version.source or ""
    logged = source.removeprefix(MODELS_URI_SCHEME)
    return logged if source.startswith(MODELS_URI_SCHEME) and logged.startswith("m-") else None


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


def record_inputs(**inputs: str) -> None:
    """Tag the active run with the inputs it resolved (`input.<name>`). Tags, not params: MLflow has
    already logged the MLproject's parameters (often an empty default), and a param cannot change."""
    mlflow.set_tags({input_tag(name): value for name, value in inputs.items()})


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


def version_data_run_id(model_name: str, version: str) -> str | None:
    """The preprocess run a registered version was trained on (its lineage), or None if unrecorded."""
    client = mlflow.MlflowClient()
    model_version = client.get_model_version(model_name, version)
    train_run_id = model_version.run_id or model_version.tags.get(TRAIN_RUN_TAG)
    if not train_run_id:
        return None
    train_run = client.get_run(train_run_id)
    # The tag since the train step stopped re-logging its data_run_id parameter; the param before.
    tagged = train_run.data.tags.get(INPUT_DATA_RUN_TAG)
    return tagged or train_run.data.params.get("data_run_id")


def registered_version(uri: str) -> mlflow.entities.model_registry.ModelVersion:
    """The registered version a `models:/<name>/<version>` or `models:/<name>@<alias>` URI names. A bad URI
    or one naming no version raises ValueError with the fix (the host tools' shared lookup)."""
    ref = parse_model_uri(uri)
    client = mlflow.MlflowClient()
    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except mlflow.exceptions.MlflowException as error:
        raise ValueError(
            f"{uri}: no such version in {mlflow.get_tracking_uri()} ({error.message}); `make run` "
            "registers versions, the gate moves `champion`"
        ) from None
