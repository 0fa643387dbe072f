"""The conductor's Kubernetes backend: one step in, one finished MLflow run out, as with the local backend.

preprocess and train go through `mlflow.projects.run(backend="kubernetes")`: MLflow creates the child run,
builds `<registry>/sentclf-<step>:<git sha>` from the step image plus the step's files, pushes it and submits
our template. building and evaluate need a kaniko build and a server sidecar, which MLflow's one-container
Job cannot hold: for them this module does what MLflow does (the same run creation, image build and push,
MLFLOW_* env) and submits our own Job. Either way the conductor hands on the same parameters, run ids and
model URIs as with the local backend.
"""

import logging
import tempfile
from pathlib import Path

import mlflow
import yaml
from docker.errors import DockerException
from kubernetes.client.rest import ApiException
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.projects._project_spec import load_project
from mlflow.projects.docker import build_docker_image
from mlflow.projects.kubernetes import push_image_to_registry
from mlflow.projects.utils import get_or_create_run
from mlflow.utils.mlflow_tags import (
    MLFLOW_DOCKER_IMAGE_ID,
    MLFLOW_PROJECT_BACKEND,
    MLFLOW_PROJECT_ENV,
    MLFLOW_RUN_NAME,
)

from conductor.kube import manifests
from conductor.kube.jobs import JobClient, JobFailed
from conductor.kube.manifests import LABEL_PIPELINE, LABEL_RUN, LABEL_STEP, MLFLOW_STEPS, PLACEHOLDER_DIGEST
from conductor.kube.settings import KubeSettings, check_artifact_location, check_tracking_uris

logger = logging.getLogger(__name__)

JOB_TAG = "kubernetes.job"


class KubernetesStepFailed(RuntimeError):
    """A step's Job failed or was stopped; the message names the run, the Job and where its logs are."""


def backend_config(settings: KubeSettings, step: str, template_path: Path) -> dict[str, str]:
    """MLflow's kubernetes backend configuration for one step (`--backend-config` of `mlflow run`)."""
    config = {"kube-job-template-path": str(template_path), "repository-uri": settings.repository(step)}
    if settings.kube_context:
        config["kube-context"] = settings.kube_context
    return config


def write_mlflow_template(settings: KubeSettings, step: str, pipeline_run_id: str | None, path: Path) -> Path:
    path.write_text(yaml.safe_dump(manifests.mlflow_job_template(settings, step, pipeline_run_id)))
    return path


class KubernetesBackend:
    """Runs each step as a Kubernetes Job; `render_step` shows what would be submitted, touching nothing."""

    def __init__(self, project_dir: Path, settings: KubeSettings, jobs: JobClient | None = None) -> None:
        check_tracking_uris()
        self.project_dir = Path(project_dir).resolve()
        self.settings = settings
        self._jobs = jobs

    @property
    def jobs(self) -> JobClient:
        if self._jobs is None:
            self._jobs = JobClient.connect(self.settings.kube_context, self.settings.namespace)
        return self._jobs

    def render_step(
        self,
        step: str,
        parameters: dict[str, str],
        run_id: str,
        experiment_id: str,
        *,
        pipeline_run_id: str | None = None,
    ) -> list[dict]:
        """Every manifest run_step would submit for this step (pure, no cluster, no registry); image
        digests are placeholders. pipeline_run_id defaults to the active (parent) run's."""
        pipeline_run_id = pipeline_run_id or _active_run_id()
        if step in MLFLOW_STEPS:
            return [
                manifests.mlflow_job(
                    self.settings, self.project_dir, step, parameters, run_id, experiment_id, pipeline_run_id
                )
            ]
        image = manifests.step_image_reference(self.settings, self.project_dir, step, PLACEHOLDER_DIGEST)
        return [self._own_job(step, parameters, run_id, experiment_id, pipeline_run_id, image)]

    def _own_job(
        self,
        step: str,
        parameters: dict[str, str],
        run_id: str,
        experiment_id: str,
        pipeline_run_id: str | None,
        image: str,
    ) -> dict:
        render = manifests.building_job if step == "building" else manifests.evaluate_job
        return render(
            self.settings, self.project_dir, parameters, run_id, experiment_id, pipeline_run_id, image
        )

    def run_step(self, step: str, parameters: dict[str, str], run_name: str) -> Run:
        """Launch one step as a Job, wait, return the finished run; raise KubernetesStepFailed on failure.
        Call it inside the conductor's parent run: the step's run becomes its child."""
        try:
            return self._run_step(step, parameters, run_name)
        except (ValueError, MlflowException, DockerException, JobFailed) as error:
            # Bad parameters, a refused push, a Job that cannot start: one error type for the conductor.
            raise KubernetesStepFailed(f"step {step}: {error}") from error
        except ApiException as error:
            raise KubernetesStepFailed(
                f"step {step}: the Kubernetes API answered {error.status} {error.reason}: {error.body}"
            ) from error

    def _run_step(self, step: str, parameters: dict[str, str], run_name: str) -> Run:
        parent = mlflow.active_run()
        if parent is None:
            raise KubernetesStepFailed(
                "run_step needs the conductor's parent run: call it inside mlflow.start_run()"
            )
        experiment_id = parent.info.experiment_id
        check_artifact_location(
            mlflow.MlflowClient().get_experiment(experiment_id).artifact_location, experiment_id
        )
        # Render once before building anything: bad parameters fail in seconds, not after an image push.
        self.render_step(step, parameters, "0" * 32, experiment_id, pipeline_run_id=parent.info.run_id)
        logger.info(
            "=== %s: submitting to namespace %s with %s ===", step, self.settings.namespace, parameters
        )
        if step in MLFLOW_STEPS:
            run_id, job_name = self._submit_through_mlflow(
                step, parameters, run_name, experiment_id, parent.info.run_id
            )
        else:
            run_id, job_name = self._submit_own(step, parameters, run_name, experiment_id, parent.info.run_id)
        mlflow.MlflowClient().set_tag(run_id, JOB_TAG, f"{self.settings.namespace}/{job_name}")
        return self._wait(step, run_id, job_name)

    def _submit_through_mlflow(
        self, step: str, parameters: dict[str, str], run_name: str, experiment_id: str, pipeline_run_id: str
    ) -> tuple[str, str]:
        with tempfile.TemporaryDirectory(prefix=f"sentclf-{step}-kube-") as tmp:
            template = write_mlflow_template(
                self.settings, step, pipeline_run_id, Path(tmp) / f"{step}-job.yaml"
            )
            try:
                submitted = mlflow.projects.run(
                    uri=str(self.project_dir / step),
                    entry_point=manifests.ENTRY_POINT,
                    parameters=parameters,
                    experiment_id=experiment_id,
                    backend="kubernetes",
                    backend_config=backend_config(self.settings, step, template),
                    env_manager="local",
                    # The image must hold the step's files: without build_image MLflow would push the bare
                    # step image under its local name.
                    build_image=True,
                    synchronous=False,
                    storage_dir=str(Path(tmp) / "storage"),
                    run_name=run_name,
                )
            except BaseException:
                _fail_unsubmitted_runs(experiment_id, pipeline_run_id)
                raise
        run_id = submitted.run_id
        try:
            selector = f"{LABEL_PIPELINE}={pipeline_run_id},{LABEL_STEP}={step}"
            job_name = self.jobs.find(selector, run_id)
            # MLflow creates the run inside mlflow.projects.run, after our template was written: the run id
            # label can only be added to the Job afterwards (its pods carry pipeline and step labels).
            self.jobs.label(job_name, {LABEL_RUN: run_id})
        except BaseException:
            _terminate(run_id, RunStatus.FAILED)
            raise
        return run_id, job_name

    def _submit_own(
        self, step: str, parameters: dict[str, str], run_name: str, experiment_id: str, pipeline_run_id: str
    ) -> tuple[str, str]:
        step_dir = str(self.project_dir / step)
        project = load_project(step_dir)
        # MLflow's own run creation for project runs: parent tag, source and git tags, parameters logged.
        run_id = get_or_create_run(
            None, step_dir, experiment_id, step_dir, None, manifests.ENTRY_POINT, parameters
        ).info.run_id
        client = mlflow.MlflowClient()
        client.set_tag(run_id, MLFLOW_PROJECT_ENV, "docker")
        client.set_tag(run_id, MLFLOW_PROJECT_BACKEND, "kubernetes")
        client.set_tag(run_id, MLFLOW_RUN_NAME, run_name)
        try:
            image = build_docker_image(
                work_dir=step_dir,
                repository_uri=self.settings.repository(step),
                base_image=project.docker_env.get("image"),
                run_id=run_id,
                build_image=True,
                docker_auth=None,
            )
            digest = push_image_to_registry(image.tags[0])
            client.set_tag(run_id, MLFLOW_DOCKER_IMAGE_ID, digest)
            manifest = self._own_job(
                step, parameters, run_id, experiment_id, pipeline_run_id, f"{image.tags[0]}@{digest}"
            )
            return run_id, self.jobs.create(manifest)
        except BaseException:
            _terminate(run_id, RunStatus.FAILED)
            raise

    def _wait(self, step: str, run_id: str, job_name: str) -> Run:
        try:
            succeeded = self.jobs.wait(job_name)
        except BaseException as error:
            # Ctrl-C, SIGTERM (the conductor's Terminated), a pod that cannot start: nothing keeps running.
            logger.error("%s: stopping (%s): deleting Job %s", step, type(error).__name__, job_name)
            try:
                self.jobs.delete(job_name)
            except Exception as delete_error:  # the original error matters more; say what is left behind
                logger.error(
                    "could not delete Job %s (%s): `kubectl delete job -n %s %s`",
                    job_name,
                    delete_error,
                    self.settings.namespace,
                    job_name,
                )
            _terminate(run_id, RunStatus.FAILED if isinstance(error, JobFailed) else RunStatus.KILLED)
            if isinstance(error, JobFailed):
                raise KubernetesStepFailed(f"step {step} (run {run_id}): {error}") from None
            raise
        _terminate(run_id, RunStatus.FINISHED if succeeded else RunStatus.FAILED)
        run = mlflow.get_run(run_id)
        if not succeeded or run.info.status != "FINISHED":
            namespace = self.settings.namespace
            raise KubernetesStepFailed(
                f"step {step} failed (run {run_id}, status {run.info.status}, Job {namespace}/{job_name}). "
                f"Its log: `kubectl logs -n {namespace} job/{job_name} --all-containers` (kept a day), or "
                f"`mlflow artifacts download -r {run_id} -a logs`"
            )
        logger.info("=== %s: run %s finished (Job %s) ===", step, run_id, job_name)
        return run


def _active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None


def _fail_unsubmitted_runs(experiment_id: str, pipeline_run_id: str) -> None:
    """mlflow.projects.run creates the step's run before it builds and pushes the image; when either fails
    (or Ctrl-C comes), MLflow leaves that run RUNNING. Steps run one at a time, so the parent's RUNNING
    kubernetes child is that run."""
    try:
        runs = mlflow.search_runs(
            experiment_ids=[experiment_id],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{pipeline_run_id}' and "
                f"tags.`{MLFLOW_PROJECT_BACKEND}` = 'kubernetes' and attributes.status = 'RUNNING'"
            ),
            output_format="list",
        )
        for run in runs:
            _terminate(run.info.run_id, RunStatus.FAILED)
    except Exception as error:  # the submission's own error is the one to report
        logger.warning("could not mark the step's unsubmitted run FAILED: %s", error)


def _terminate(run_id: str, status: int) -> None:
    """End the run as the Job ended. A failed Job fails its run even if a container already ended it
    FINISHED (building's prepare container ends the run it shares with the later ones)."""
    client = mlflow.MlflowClient()
    current = client.get_run(run_id).info.status
    wanted = RunStatus.to_string(status)
    if status == RunStatus.FINISHED and RunStatus.is_terminated(RunStatus.from_string(current)):
        return  # a container ended it already: keep what it said, FAILED included
    if current != wanted:
        client.set_terminated(run_id, wanted)
