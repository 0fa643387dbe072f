"""What a Kubernetes run needs from the user, read from the environment and checked before anything is built.

A user names a registry, a kube context and a namespace in environment variables rather than editing a
file; the same settings then yield MLflow's backend configuration and every Job manifest. Bad values fail
here, with the variable to set, and not halfway through a pipeline.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import mlflow

# The kubernetes/ room at the repository root: the Job templates and their README.
ROOM_DIR = Path(__file__).resolve().parents[2] / "kubernetes"
TEMPLATE_DIR = ROOM_DIR / "templates"
# Kaniko's last release before the project was archived (2025); the -debug variant has the busybox shell
# the building Job needs. SENTCLF_KANIKO_IMAGE names a mirror or a maintained fork instead.
DEFAULT_KANIKO_IMAGE = "gcr.io/kaniko-project/executor:v1.24.0-debug"
# A Kubernetes resource name (RFC 1123 label) and an image repository path as registries accept them.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REGISTRY = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$")
_TRUE = ("1", "true", "yes")


class KubeSettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and a value that works."""


@dataclass(frozen=True)
class KubeSettings:
    """Where and how the pipeline's Jobs run.

    registry: repository prefix the cluster pulls from and the user (and kaniko) can push to, e.g.
        `registry.example.com/sentclf`; step images go to `<registry>/sentclf-<step>`, server images to
        `<registry>/<model>-server`.
    kube_context: kubeconfig context (None: the current one, or the in-cluster config).
    namespace: where every Job runs.
    pull_secret: a kubernetes.io/dockerconfigjson Secret in the namespace for pulling the images.
    push_secret: the same kind of Secret with push rights, mounted into kaniko (default: pull_secret).
    env_secret: a Secret whose keys become env of every step container (e.g. MLFLOW_TRACKING_TOKEN).
    kaniko_image: the image builder of the building Job.
    insecure_registry: the registry speaks plain HTTP (a test cluster's local registry).
    template_dir: the Job templates (kubernetes/templates).
    """

    registry: str
    kube_context: str | None = None
    namespace: str = "default"
    pull_secret: str | None = None
    push_secret: str | None = None
    env_secret: str | None = None
    kaniko_image: str = DEFAULT_KANIKO_IMAGE
    insecure_registry: bool = False
    template_dir: Path = field(default=TEMPLATE_DIR)

    def __post_init__(self) -> None:
        registry = self.registry.strip().rstrip("/")
        object.__setattr__(self, "registry", registry)
        if not registry:
            raise KubeSettingsError(
                "SENTCLF_REGISTRY is not set: name the registry the cluster pulls from and you can push to, "
                "e.g. SENTCLF_REGISTRY=registry.example.com/sentclf"
            )
        if "://" in registry or "@" in registry or not _REGISTRY.match(registry):
            raise KubeSettingsError(
                f"SENTCLF_REGISTRY={registry!r} is not a repository prefix: give host[:port]/path in lower "
                "case, without a scheme, tag or digest, e.g. registry.example.com/sentclf or localhost:5001"
            )
        for variable, value in (
            ("SENTCLF_KUBE_NAMESPACE", self.namespace),
            ("SENTCLF_KUBE_PULL_SECRET", self.pull_secret),
            ("SENTCLF_KUBE_PUSH_SECRET", self.push_secret),
            ("SENTCLF_KUBE_ENV_SECRET", self.env_secret),
        ):
            if value is not None and not _DNS_LABEL.match(value):
                raise KubeSettingsError(
                    f"{variable}={value!r} is not a Kubernetes name: lower-case letters, digits and '-'"
                )
        if not (self.template_dir / "train-job.yaml").is_file():
            raise KubeSettingsError(f"no Job templates in {self.template_dir}: expected kubernetes/templates")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "KubeSettings":
        """Settings from SENTCLF_* variables (see kubernetes/README.md)."""
        env = os.environ if environ is None else environ

        def optional(name: str) -> str | None:
            return env.get(name, "").strip() or None

        pull_secret = optional("SENTCLF_KUBE_PULL_SECRET")
        return cls(
            registry=env.get("SENTCLF_REGISTRY", ""),
            kube_context=optional("SENTCLF_KUBE_CONTEXT"),
            namespace=optional("SENTCLF_KUBE_NAMESPACE") or "default",
            pull_secret=pull_secret,
            push_secret=optional("SENTCLF_KUBE_PUSH_SECRET") or pull_secret,
            env_secret=optional("SENTCLF_KUBE_ENV_SECRET"),
            kaniko_image=optional("SENTCLF_KANIKO_IMAGE") or DEFAULT_KANIKO_IMAGE,
            insecure_registry=env.get("SENTCLF_REGISTRY_INSECURE", "").strip().lower() in _TRUE,
        )

    def repository(self, step: str) -> str:
        """Where the step's image (the step image plus the step's code) is pushed: MLflow's repository-uri."""
        return f"{self.registry}/sentclf-{step}"


class TrackingUriError(ValueError):
    """The tracking URI cannot serve pods in a cluster; the message names the fix."""


def pod_tracking_uri() -> str:
    """The tracking URI the pods get: KUBE_MLFLOW_TRACKING_URI if set (the server's address as seen from
    inside the cluster), else the conductor's own. The same rule MLflow's kubernetes backend applies."""
    return os.environ.get("KUBE_MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


def check_tracking_uris() -> None:
    """Refuse a tracking store pods cannot reach: a sqlite file or a local directory lives on this machine,
    and a cluster mounts none of its paths. Runs, models and artifacts must go through an MLflow server."""
    for variable, uri in (
        ("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri()),
        ("the pods'", pod_tracking_uri()),
    ):
        if not uri.startswith(("http://", "https://")):
            raise TrackingUriError(
                f"{variable} tracking URI is {uri!r}, which pods in a cluster cannot reach: a Kubernetes run "
                "needs an MLflow server with proxied artifacts. Start one with `make tracking-server` (an "
                "`mlflow server` on PostgreSQL with --serve-artifacts), then set "
                "MLFLOW_TRACKING_URI=http://<host>:<port> (and KUBE_MLFLOW_TRACKING_URI if the cluster "
                "reaches it under another address)"
            )


def check_artifact_location(artifact_location: str, experiment_id: str) -> None:
    """Refuse an experiment whose artifacts live on a filesystem path: pods would write to their own disk.
    `mlflow-artifacts:` (proxied by the server) and object stores (s3://, gs://, ...) are reachable."""
    scheme = urlparse(artifact_location).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a path, file:///..., or a Windows drive letter
        raise TrackingUriError(
            f"experiment {experiment_id} stores artifacts at {artifact_location!r}, a path pods cannot "
            "reach: use an experiment created on a server started with --serve-artifacts (`make "
            "tracking-server`), whose artifact location is mlflow-artifacts:/..., e.g. `mlflow experiments "
            "create -n sentclf-k8s` then MLFLOW_EXPERIMENT_NAME=sentclf-k8s"
        )
