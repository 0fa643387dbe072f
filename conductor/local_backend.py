"""How the conductor launches a step on this machine: the step's MLproject, run by MLflow's projects API
in the step's docker_env container, on the host network, as a child run of the pipeline.

Cancelling is the hard part. MLflow's own cancel sends SIGTERM to the step's `docker run` client, which
forwards the signal to the container, whose PID 1 would ignore it, so the containers run with `--init`
(tini forwards it on) and the step's own handler (sentclf.tracking.step_run) ends the run KILLED. Should a
container outlive that anyway (a client killed with SIGKILL, a step stuck in C code), every container of
the pipeline carries a label and is removed here after a grace period.

Launching is the other part: MLflow's own local backend, asked not to wait, starts a second `mlflow run`
process that imports MLflow again and validates the project again before it runs `docker run`, 4-5 s a step.
DirectDockerBackend, registered with MLflow as a project backend plugin, hands back the `docker run` process
itself (MLflow starts it as `bash -c "docker run ..."`, and bash execs a lone command), so the container's
exit status is the step's (137, 143: killed from outside) and no second process stands between a signal and
the container.
"""

import importlib.metadata
import logging
import tempfile
import time
from pathlib import Path

import docker.errors
import mlflow
from mlflow.entities import Run, RunStatus
from mlflow.projects.backend.local import LocalBackend as MlflowLocalBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import PROJECT_SYNCHRONOUS

from conductor.outcome import CONTAINER_KILLED, KILLED_FROM_OUTSIDE, STEP_FAILED
from conductor.tracking_credentials import step_credentials
from sentclf.containers import PIPELINE_LABEL, remove_labelled
from sentclf.engine import containers_where, docker_client
from sentclf.images import checkout_filter
from sentclf.tracking import StepCancelled

logger = logging.getLogger(__name__)

# Seconds a cancelled step gets to end its run and remove its servers before its containers are killed.
CANCEL_GRACE_S = 20.0


# The name pyproject.toml registers DirectDockerBackend under (the `mlflow.project_backend` entry points).
DIRECT_BACKEND = "sentclf-docker"


class DirectDockerBackend(MlflowLocalBackend):
    """MLflow's local backend without its second process: the run, its tags, its parameters and the
    `docker run` command are MLflow's; the process returned is `docker run` itself (what MLflow's synchronous
    mode starts), not waited on here. The caller waits, and ends a run the container left RUNNING."""

    def run(
        self,
        project_uri: str,
        entry_point: str,
        params: dict,
        version: str | None,
        backend_config: dict,
        tracking_uri: str,
        experiment_id: str,
    ) -> SubmittedRun:
        return super().run(
            project_uri,
            entry_point,
            params,
            version,
            backend_config | {PROJECT_SYNCHRONOUS: True},
            tracking_uri,
            experiment_id,
        )


def require_direct_backend() -> None:
    """A clear error where this checkout's venv was installed before the plugin was registered."""
    if not importlib.metadata.entry_points(group="mlflow.project_backend", name=DIRECT_BACKEND):
        raise RuntimeError(
            f"MLflow does not know the {DIRECT_BACKEND!r} project backend this checkout launches its steps "
            "with: the venv was installed before it was added. Reinstall the project into it with "
            "`make venv` (or `pip install -e .` in the venv you use), then run again."
        )


class StepFailed(RuntimeError):
    """A child step ended in failure; the message names it, its run id and where its log is. `kind` says
    whether it was the step's own failure or its container was killed from outside (conductor.outcome)."""

    def __init__(self, message: str, step: str = "", kind: str = STEP_FAILED) -> None:
        super().__init__(message)
        self.step = step
        self.kind = kind


class LocalBackend:
    """Runs each step's MLproject with the local Docker engine."""

    def __init__(self, project_dir: Path, pipeline_run_id: str) -> None:
        require_direct_backend()
        self.project_dir = project_dir
        self.pipeline_run_id = pipeline_run_id
        # The host network: the steps reach an http:// tracking server on loopback. --init: a container's
        # PID 1 ignores SIGTERM unless it handles it; tini passes it on to the step.
        # Two labels: the pipeline's (cancel finds its containers) and the checkout's (leftover checks count
        # only their own). MLflow passes one value per option, so the second goes as `-l`, docker's short
        # form of `--label`.
        self.docker_args = {
            "network": "host",
            "init": True,
            "label": f"{PIPELINE_LABEL}={pipeline_run_id}",
            "l": checkout_filter(project_dir),
        }

    def run_step(
        self, step: str, parameters: dict[str, str], run_name: str, entry_point: str = "main"
    ) -> Run:
        """Run `step` to its end and return its finished run; StepFailed if it failed. Ctrl-C or SIGTERM
        during the step cancels it (see the module docstring) and is raised again."""
        # MLflow's `mlflow run` makes a directory for downloaded `path` parameters under storage_dir (the
        # system temp dir by default) and never removes it: give it one that goes when the step ends.
        # A server with a login: the credentials reach the container as a read-only mounted file, never
        # as a variable (conductor.tracking_credentials).
        with (
            tempfile.TemporaryDirectory(prefix=f"sentclf-{step}-storage-") as storage_dir,
            step_credentials(self.project_dir, mlflow.get_tracking_uri()) as credential_args,
        ):
            submitted = mlflow.projects.run(
                uri=str(self.project_dir / step),
                entry_point=entry_point,
                parameters=parameters,
                env_manager="local",
                backend=DIRECT_BACKEND,
                docker_args=self.docker_args | credential_args,
                build_image=False,
                synchronous=False,
                storage_dir=storage_dir,
                run_name=run_name,
            )
            try:
                succeeded = submitted.wait()
            except (KeyboardInterrupt, StepCancelled):
                self.cancel(submitted)
                raise
        run = end_left_running(submitted.run_id, succeeded)
        if not succeeded or run.info.status != "FINISHED":
            run_id = submitted.run_id
            # Not cancelled by us (that raised above): a container that ended by a signal was killed
            # from outside (`docker kill`/`docker stop`, the kernel's OOM killer).
            returncode = getattr(getattr(submitted, "command_proc", None), "returncode", None)
            killed = returncode in KILLED_FROM_OUTSIDE
            raise StepFailed(
                f"step {step} {'was killed from outside' if killed else 'failed'} (run {run_id}, status "
                f"{run.info.status}, exit {returncode}). Its log is in the output above and in the run's "
                f"artifacts: `mlflow artifacts download -r {run_id} -a logs`, or `mlflow ui` -> run "
                f"{run_id} -> Artifacts -> logs/{step}.log",
                step=step,
                kind=CONTAINER_KILLED if killed else STEP_FAILED,
            )
        return run

    def cancel(self, submitted: SubmittedRun) -> None:
        """Stop the running step: signal it, give it CANCEL_GRACE_S to end cleanly, then remove whatever
        container of this pipeline is still there, and make sure its run does not stay RUNNING."""
        started = time.monotonic()
        submitted.cancel()
        label = f"{PIPELINE_LABEL}={self.pipeline_run_id}"
        engine = docker_client()
        while containers_where(engine, stopped=False, label=label):
            if time.monotonic() - started > CANCEL_GRACE_S:
                break
            time.sleep(0.2)
        removed: list[str] = []
        for _ in range(3):
            try:
                removed += remove_labelled(PIPELINE_LABEL, self.pipeline_run_id)
                break
            except docker.errors.APIError as error:  # 409: `docker run --rm` is removing it already
                logger.info("container clean-up raced the engine's own removal: %s", error.explanation)
                time.sleep(1.0)
        if removed:
            logger.warning("removed containers that outlived the cancel: %s", ", ".join(removed))
        client = mlflow.MlflowClient()
        if not RunStatus.is_terminated(RunStatus.from_string(client.get_run(submitted.run_id).info.status)):
            client.set_terminated(submitted.run_id, "KILLED")
        logger.info("step run %s cancelled in %.1fs", submitted.run_id, time.monotonic() - started)


def end_left_running(run_id: str, succeeded: bool) -> Run:
    """The step's run once its container is gone, ended as MLflow ends a project run its command left open:
    FINISHED on exit 0, FAILED otherwise (a container killed, out of memory). No run of a step that is over
    stays RUNNING."""
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if not RunStatus.is_terminated(RunStatus.from_string(run.info.status)):
        client.set_terminated(run_id, "FINISHED" if succeeded else "FAILED")
        run = client.get_run(run_id)
    return run
