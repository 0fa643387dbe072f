"""Run the pipeline's steps as Kubernetes Jobs: settings, manifest rendering, submission.

Lives in kubernetes/ (put that directory on sys.path), not as a package named `kubernetes`, which would
shadow the Kubernetes client library MLflow's backend imports.
"""

from conductor.kube.backend import KubernetesBackend, KubernetesStepFailed, backend_config
from conductor.kube.jobs import JobClient, JobFailed
from conductor.kube.manifests import ManifestError
from conductor.kube.settings import KubeSettings, KubeSettingsError, TrackingUriError

__all__ = [
    "JobClient",
    "JobFailed",
    "KubeSettings",
    "KubeSettingsError",
    "KubernetesBackend",
    "KubernetesStepFailed",
    "ManifestError",
    "TrackingUriError",
    "backend_config",
]
