"""Submitting, watching and deleting the pipeline's Jobs: the only module that talks to a cluster.

MLflow's own KubernetesSubmittedRun waits on a Job's conditions only, so a pod that can never start (an
image it cannot pull) is waited on until activeDeadlineSeconds, and its cancel deletes the Job without a
propagation policy, which for a batch/v1 Job orphans the running pod. This watcher fails fast on pods
that cannot start and deletes with propagation, so a cancelled step leaves nothing running.
"""

import logging
import time
from collections.abc import Callable

import kubernetes
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

logger = logging.getLogger(__name__)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# A container waiting for one of these never starts without a change to the Job or the cluster.
FATAL_WAITING = frozenset({"InvalidImageName", "CreateContainerConfigError", "CreateContainerError"})
# These may clear (a registry hiccup, a secret created late): fail only when they last.
PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff"})
# Background: the API returns at once and the garbage collector removes the pods, whose containers get
# SIGTERM and their grace period, as `kubectl delete job` does.
PROPAGATION = "Background"


class JobFailed(RuntimeError):
    """A Job failed, or its pod cannot start; the message names the pod, the container and the reason."""


def load_kube_config(context: str | None) -> kubernetes.client.ApiClient:
    """A client for the named context; with none named, the current context, else the in-cluster config
    (the conductor itself running in a pod)."""
    if context:
        try:
            return kubernetes.config.new_client_from_config(context=context)
        except (OSError, ConfigException) as error:
            raise JobFailed(
                f"kube context {context!r} cannot be loaded ({error}): name one of "
                "`kubectl config get-contexts` in SENTCLF_KUBE_CONTEXT"
            ) from None
    try:
        return kubernetes.config.new_client_from_config()
    except (OSError, ConfigException):
        kubernetes.config.load_incluster_config()
        return kubernetes.client.ApiClient()


class JobClient:
    """Jobs in one namespace: create, find, label, wait, delete."""

    def __init__(
        self,
        namespace: str,
        batch: kubernetes.client.BatchV1Api,
        core: kubernetes.client.CoreV1Api,
        poll_s: float = 5.0,
        pull_grace_s: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = namespace
        self.batch = batch
        self.core = core
        self.poll_s = poll_s
        self.pull_grace_s = pull_grace_s
        self._sleep = sleep
        self._clock = clock

    @classmethod
    def connect(cls, context: str | None, namespace: str) -> "JobClient":
        api = load_kube_config(context)
        return cls(namespace, kubernetes.client.BatchV1Api(api), kubernetes.client.CoreV1Api(api))

    def create(self, manifest: dict) -> str:
        """Submit a Job; the API server rejects unknown or duplicate fields rather than dropping them."""
        self.batch.create_namespaced_job(self.namespace, manifest, field_validation="Strict")
        name = manifest["metadata"]["name"]
        logger.info("submitted Job %s/%s", self.namespace, name)
        return name

    def find(self, label_selector: str, run_id: str) -> str:
        """The Job with these labels whose container runs MLflow run `run_id` (MLflow names its Jobs
        `<project>-<timestamp>` and does not return the name)."""
        jobs = self.batch.list_namespaced_job(self.namespace, label_selector=label_selector).items
        for job in jobs:
            containers = job.spec.template.spec.containers or []
            env = {item.name: item.value for container in containers for item in container.env or []}
            if env.get("MLFLOW_RUN_ID") == run_id:
                return job.metadata.name
        raise JobFailed(f"no Job with labels {label_selector} runs MLflow run {run_id} in {self.namespace}")

    def label(self, name: str, labels: dict[str, str]) -> None:
        self.batch.patch_namespaced_job(name, self.namespace, {"metadata": {"labels": labels}})

    def wait(self, name: str) -> bool:
        """Poll until the Job completes (True) or fails (False); raise JobFailed when its pod cannot start."""
        pull_waiting_since: dict[str, float] = {}
        started = False
        while True:
            status = self.batch.read_namespaced_job_status(name, self.namespace).status
            for condition in status.conditions or []:
                if condition.status == "True" and condition.type in ("Complete", "Failed"):
                    logger.info("Job %s: %s %s", name, condition.type, condition.message or "")
                    return condition.type == "Complete"
            if status.active and not started:
                started = True
                logger.info("Job %s: pod started", name)
            self._check_pods(name, pull_waiting_since)
            self._sleep(self.poll_s)

    def _check_pods(self, name: str, pull_waiting_since: dict[str, float]) -> None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items
        now = self._clock()
        for pod in pods:
            statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
            for container in statuses:
                waiting = container.state.waiting if container.state else None
                key = f"{pod.metadata.name}/{container.name}"
                if waiting is None or waiting.reason not in FATAL_WAITING | PULL_WAITING:
                    pull_waiting_since.pop(key, None)
                    continue
                since = pull_waiting_since.setdefault(key, now)
                if waiting.reason in FATAL_WAITING or now - since >= self.pull_grace_s:
                    raise JobFailed(
                        f"pod {key} cannot start: {waiting.reason}: {waiting.message or ''} (check the image "
                        "name, that the registry holds it, and SENTCLF_KUBE_PULL_SECRET)"
                    )

    def delete(self, name: str) -> None:
        """Delete the Job and, through propagation, its pods; a Job already gone is fine."""
        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy=PROPAGATION)
            logger.info("deleted Job %s/%s and its pods", self.namespace, name)
        except ApiException as error:
            if error.status != 404:
                raise

    def delete_labelled(self, label_selector: str) -> None:
        """Delete every Job with these labels (a whole pipeline: sentclf.pipeline-run-id=<parent run>)."""
        self.batch.delete_collection_namespaced_job(
            self.namespace, label_selector=label_selector, propagation_policy=PROPAGATION
        )
