"""Run the pipeline's steps as Kubernetes Jobs: settings, manifest rendering, submission.

Lives in kubernetes/ (put that directory on sys.path), not as a package named `kubernetes`, which would
shadow the Kubernetes client library MLflow's backend imports.
"""

from sentclf_kube.backend import KubernetesBackend, KubernetesStepFailed, backend_config
from sentclf_kube.jobs import JobClient, JobFailed
from sentclf_kube.manifests import ManifestError
from sentclf_kube.settings import KubeSettings, KubeSettingsError, TrackingUriError

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
