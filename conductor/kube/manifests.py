"""Every Job manifest the conductor submits for a step, rendered without a cluster or a registry.

preprocess and train go through MLflow's kubernetes backend, so their Job is whatever MLflow's own
`_get_kubernetes_job_definition` makes of our template, the entry point command MLflow builds and the run's
env: rendering calls those same functions rather than imitating them. building and evaluate need more than
MLflow's one container (a kaniko build, a server sidecar): their Jobs come from our templates, with the
step's command line computed by MLflow's entry point code exactly as the local backend computes it.
"""

import contextlib
import logging
import re
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from mlflow.projects._project_spec import load_project
from mlflow.projects.docker import _get_docker_image_uri
from mlflow.projects.kubernetes import _get_kubernetes_job_definition, _get_run_command
from mlflow.projects.utils import get_entry_point_command, get_run_env_vars

from conductor.kube.settings import KubeSettings, pod_tracking_uri
from sentclf.contract import STEP_TAG

LABEL_PIPELINE = "sentclf.pipeline-run-id"
LABEL_STEP = STEP_TAG  # the pod label says which step, as the run tag does
LABEL_RUN = "sentclf.run-id"
PART_OF = {"app.kubernetes.io/part-of": "sentclf"}
MLFLOW_STEPS = ("preprocess", "train")
OWN_STEPS = ("building", "evaluate")
STEPS = MLFLOW_STEPS + OWN_STEPS
ENTRY_POINT = "main"
WORKSPACE = "/workspace"
SERVER_ADDRESS = "127.0.0.1:8001"
# Stands in for the digest a push returns: rendering never touches a registry.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
_RUN_ID = re.compile(r"^[a-z0-9]{1,40}$")


class ManifestError(ValueError):
    """A manifest cannot be rendered from these inputs; the message names the input and the fix."""


def load_template(settings: KubeSettings, step: str) -> dict:
    """A fresh copy of the step's Job template (kubernetes/templates/<step>-job.yaml)."""
    if step not in STEPS:
        raise ManifestError(f"unknown step {step!r}: one of {', '.join(STEPS)}")
    path = settings.template_dir / f"{step}-job.yaml"
    job = yaml.safe_load(path.read_text())
    if not isinstance(job, dict) or job.get("kind") != "Job":
        raise ManifestError(f"{path} is not a Job manifest")
    return job


def labels(step: str, pipeline_run_id: str | None, run_id: str | None = None) -> dict[str, str]:
    """What lets `kubectl get/delete jobs,pods -l sentclf.pipeline-run-id=<parent run>` find a pipeline."""
    found = {**PART_OF, LABEL_STEP: step}
    if pipeline_run_id:
        found[LABEL_PIPELINE] = pipeline_run_id
    if run_id:
        found[LABEL_RUN] = run_id
    return found


def run_env(run_id: str, experiment_id: str) -> dict[str, str]:
    """The env MLflow's backend gives a step's container: which run to resume, in which store."""
    env = get_run_env_vars(run_id=run_id, experiment_id=experiment_id)
    env["MLFLOW_TRACKING_URI"] = pod_tracking_uri()
    return env


def _containers(job: dict) -> list[dict]:
    spec = job["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec.get("containers", [])


def _container(job: dict, name: str) -> dict:
    for container in _containers(job):
        if container.get("name") == name:
            return container
    raise ManifestError(f"the {job['metadata'].get('name')} template has no container named {name!r}")


def _place(
    job: dict, settings: KubeSettings, job_labels: dict[str, str], step_containers: list[dict]
) -> None:
    """Namespace, labels on the Job and its pods, and the optional secrets."""
    job["metadata"]["namespace"] = settings.namespace
    job["metadata"].setdefault("labels", {}).update(job_labels)
    pod = job["spec"]["template"]
    pod.setdefault("metadata", {}).setdefault("labels", {}).update(job_labels)
    if settings.pull_secret:
        pod["spec"]["imagePullSecrets"] = [{"name": settings.pull_secret}]
    if settings.env_secret:
        for container in step_containers:
            container.setdefault("envFrom", []).append({"secretRef": {"name": settings.env_secret}})


def _add_env(container: dict, env: dict[str, str]) -> None:
    container["env"] = container.get("env", []) + [{"name": k, "value": v} for k, v in env.items()]


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow logs "Creating Job ..." and a download directory while we only render: not worth a line."""
    mlflow_logger = logging.getLogger("mlflow.projects")
    level = mlflow_logger.level
    mlflow_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        mlflow_logger.setLevel(level)


def entry_point_command(project_dir: Path, step: str, parameters: dict[str, str]) -> str:
    """The step's command line, as MLflow computes it for every backend (values shell-quoted)."""
    project = load_project(str(project_dir / step))
    declared = project.get_entry_point(ENTRY_POINT).parameters
    if unknown := sorted(set(parameters) - set(declared)):
        # `mlflow run` would hand them on as extra arguments, which the step's script refuses in the pod.
        raise ManifestError(
            f"{step} has no parameter {', '.join(unknown)}: its parameters are {', '.join(sorted(declared))}"
        )
    # MLflow makes a download directory for `path` parameters under storage_dir: one that goes away.
    with tempfile.TemporaryDirectory(prefix=f"sentclf-{step}-render-") as storage_dir, _quiet_mlflow():
        return get_entry_point_command(project, ENTRY_POINT, parameters, storage_dir)[0]


def mlflow_job_template(settings: KubeSettings, step: str, pipeline_run_id: str | None) -> dict:
    """The template handed to MLflow's backend (kube-job-template-path) for preprocess or train."""
    if step not in MLFLOW_STEPS:
        raise ManifestError(
            f"{step} does not run through MLflow's backend: only {', '.join(MLFLOW_STEPS)} do"
        )
    job = load_template(settings, step)
    _place(job, settings, labels(step, pipeline_run_id), _containers(job)[:1])
    return job


def mlflow_job(
    settings: KubeSettings,
    project_dir: Path,
    step: str,
    parameters: dict[str, str],
    run_id: str,
    experiment_id: str,
    pipeline_run_id: str | None,
    image_digest: str = PLACEHOLDER_DIGEST,
) -> dict:
    """The Job MLflow's backend submits for preprocess or train, built by MLflow's own functions."""
    template = mlflow_job_template(settings, step, pipeline_run_id)
    step_dir = project_dir / step
    project = load_project(str(step_dir))
    command = entry_point_command(project_dir, step, parameters)
    argv = _get_run_command([command])
    _refuse_double_quoting(step, argv, shlex.split(command))
    # `<repository-uri>:<git sha>`, the tag MLflow's build_docker_image gives the step's image.
    image_tag = _get_docker_image_uri(repository_uri=settings.repository(step), work_dir=str(step_dir))
    env = get_run_env_vars(run_id=run_id, experiment_id=experiment_id)
    with _quiet_mlflow():
        return _get_kubernetes_job_definition(project.name, image_tag, image_digest, argv, env, template)


def _refuse_double_quoting(step: str, submitted: list[str], meant: list[str]) -> None:
    """MLflow's backend shell-quotes the already quoted command once more and Kubernetes runs it without a
    shell, so a value that needs quoting (a space, an empty string) would reach the step with its quotes."""
    if submitted != meant:
        mangled = sorted(
            f"{meant[i - 1]} {arg!r}" if i and meant[i - 1].startswith("--") else repr(arg)
            for i, (arg, want) in enumerate(zip(meant, submitted, strict=False))
            if arg != want
        )
        raise ManifestError(
            f"{step}: MLflow's kubernetes backend would pass {', '.join(mangled)} with literal quotes: give "
            "these parameters values without spaces, quotes or shell characters (and no empty strings)"
        )


def _job_name(step: str, run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ManifestError(f"run id {run_id!r} is not an MLflow run id (lower-case hex)")
    return f"sentclf-{step}-{run_id}"


def _own_job(
    settings: KubeSettings, step: str, run_id: str, pipeline_run_id: str | None, step_containers: list[str]
) -> dict:
    job = load_template(settings, step)
    job["metadata"]["name"] = _job_name(step, run_id)
    _place(
        job,
        settings,
        labels(step, pipeline_run_id or run_id, run_id),
        [_container(job, name) for name in step_containers],
    )
    return job


def building_job(
    settings: KubeSettings,
    project_dir: Path,
    parameters: dict[str, str],
    run_id: str,
    experiment_id: str,
    pipeline_run_id: str | None,
    step_image: str,
) -> dict:
    """prepare (building.py --prepare-only) -> kaniko (build, push) -> record (--record-pushed-image)."""
    job = _own_job(settings, "building", run_id, pipeline_run_id, ["prepare", "record"])
    command = shlex.split(entry_point_command(project_dir, "building", parameters))
    env = run_env(run_id, experiment_id) | {"SENTCLF_REGISTRY": settings.registry}
    for name, flag in (("prepare", "--prepare-only"), ("record", "--record-pushed-image")):
        container = _container(job, name)
        container["image"] = step_image
        container["command"] = [*command, "--context-dir", WORKSPACE, flag]
        _add_env(container, env)

    kaniko = _container(job, "kaniko")
    kaniko["image"] = settings.kaniko_image
    if settings.insecure_registry:
        kaniko["args"] += ["--insecure", "--insecure-pull"]
    if settings.push_secret:
        # kaniko reads registry credentials from $DOCKER_CONFIG/config.json, /kaniko/.docker by default.
        job["spec"]["template"]["spec"]["volumes"].append(
            {
                "name": "push-credentials",
                "secret": {
                    "secretName": settings.push_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
        kaniko.setdefault("volumeMounts", []).append(
            {"name": "push-credentials", "mountPath": "/kaniko/.docker", "readOnly": True}
        )
    return job


def evaluate_job(
    settings: KubeSettings,
    project_dir: Path,
    parameters: dict[str, str],
    run_id: str,
    experiment_id: str,
    pipeline_run_id: str | None,
    step_image: str,
) -> dict:
    """The server image as a native sidecar, evaluate.py against it on loopback."""
    command = shlex.split(entry_point_command(project_dir, "evaluate", parameters))
    server_image = parameters.get("server_image", "")
    if not server_image.startswith(f"{settings.registry}/"):
        raise ManifestError(
            f"server_image {server_image!r} is not in SENTCLF_REGISTRY={settings.registry}: the cluster "
            "pulls the server from the registry the building Job pushed it to; pass the building run's "
            "tag `server_image`"
        )
    job = _own_job(settings, "evaluate", run_id, pipeline_run_id, ["evaluate"])
    _container(job, "server")["image"] = server_image
    evaluate = _container(job, "evaluate")
    evaluate["image"] = step_image
    evaluate["command"] = command
    _add_env(evaluate, run_env(run_id, experiment_id))
    return job


def step_image_reference(settings: KubeSettings, project_dir: Path, step: str, digest: str) -> str:
    """`<registry>/sentclf-<step>:<git sha>@<digest>`, as MLflow names the image it pushes."""
    tag = _get_docker_image_uri(repository_uri=settings.repository(step), work_dir=str(project_dir / step))
    return f"{tag}@{digest}"
