"""A registered version served in a cluster: Deployment, Service, HorizontalPodAutoscaler and a KServe
InferenceService, rendered from kubernetes/templates/serving.yaml without a cluster.

    python -m tools.serving_manifests [models:/<name>@<alias> | models:/<name>/<version>] [--memory-mb N]
        [--challenger <model URI> --route shadow|split:<p>]

prints them as YAML (with the same SENTCLF_* variables as the pipeline's Kubernetes backend).

The image is the one the building step tagged the version with (`server_image`; one built outside the
registry is named under SENTCLF_REGISTRY, where `docker tag` + `docker push` put it). The memory request is
what the version's evaluate run measured its server using at peak under load (`server_memory_peak_mb`),
with headroom; the limit is twice the request.

With a challenger (--challenger <model URI> --route shadow|split:<p>) the manifests render
the same choice as `make serve`:
  * the Deployment's pod holds both versions: an init container from the challenger's server image copies
    its model directory into an emptyDir that the champion's server reads as CHALLENGER_DIR, with ROUTE as
    given (shadow, or a split sticky per caller inside the server); the memory request covers both peaks;
  * the InferenceService: shadow the same way, inside the pod (KServe has no mirroring); split as KServe's
    own canary: the predictor is the challenger's image with canaryTrafficPercent, the champion staying the
    last rolled-out revision that takes the rest. KServe's canary needs its Serverless mode (RawDeployment has
    no traffic split), splits requests rather than callers (not sticky) and takes a whole percent.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml

from conductor.kube.manifests import PART_OF, ManifestError
from conductor.kube.settings import TEMPLATE_DIR, KubeSettings, KubeSettingsError
from sentclf.contract import DEFAULT_CHAMPION_URI, INPUT_SERVER_IMAGE_TAG, SERVER_MEMORY_METRIC, SHADOW_ROUTE
from sentclf.tracking import configure_logging
from tools.serve import ServeError, check_route, resolve_image

TEMPLATE = "serving.yaml"
# Request = measured peak x headroom, rounded up to 16 MiB; limit = LIMIT_FACTOR x request.
HEADROOM = 1.5
LIMIT_FACTOR = 2
MIN_MEMORY_MI = 128
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class ServedVersion:
    """What the manifests need to know about one registered version."""

    model_name: str
    version: str
    image: str
    memory_peak_mb: float


@dataclass(frozen=True)
class ChallengerVersion:
    """The second version served beside the champion, and the route between them."""

    version: str
    image: str
    memory_peak_mb: float
    route: str  # "shadow" or "split:<percent>"


CHALLENGER_MOUNT = "/models/challenger"
_COPY_MODEL = "import shutil; shutil.copytree('/models/model', '/challenger/model')"


def _dns_name(text: str) -> str:
    name = _NOT_DNS.sub("-", text.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise ManifestError(f"{text!r} gives no Kubernetes name")
    return name


def resolve_version(model_uri: str, client: mlflow.MlflowClient | None = None) -> tuple[str, str, str]:
    """(model name, version, server image) of `models:/<name>/<version>` or `models:/<name>@<alias>`."""
    try:
        return resolve_image(model_uri, client)
    except ServeError as exc:
        raise ManifestError(str(exc)) from None


def measured_memory_mb(image: str, client: mlflow.MlflowClient | None = None) -> float:
    """server_memory_peak_mb of the newest evaluate run that served `image` (tag input.server_image)."""
    client = client or mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=(f"tags.`{INPUT_SERVER_IMAGE_TAG}` = '{image}' and metrics.{SERVER_MEMORY_METRIC} > 0"),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ManifestError(
            f"no evaluate run measured {image} ({SERVER_MEMORY_METRIC}): run "
            "`mlflow run evaluate -P model_version=<version>`, or give --memory-mb"
        )
    return float(runs[0].data.metrics[SERVER_MEMORY_METRIC])


def memory_quantities(peak_mb: float) -> tuple[str, str]:
    """(request, limit) as Kubernetes quantities for a measured peak."""
    request = max(MIN_MEMORY_MI, math.ceil(peak_mb * HEADROOM / 16) * 16)
    return f"{request}Mi", f"{request * LIMIT_FACTOR}Mi"


def registry_image(image: str, settings: KubeSettings) -> str:
    """The image under SENTCLF_REGISTRY (as it is, if it is there already)."""
    if image.startswith(f"{settings.registry}/"):
        return image
    return f"{settings.registry}/{image.rsplit('/', 1)[-1]}"


def _set_container(container: dict, image: str, memory: tuple[str, str]) -> None:
    container["image"] = image
    container["resources"]["requests"]["memory"], container["resources"]["limits"]["memory"] = memory


def _hold_challenger(pod_spec: dict, container: dict, challenger: ChallengerVersion, image: str) -> None:
    """The challenger's model files in the pod (init container -> emptyDir) and the server told of them."""
    pod_spec["volumes"] = [*pod_spec.get("volumes", []), {"name": "challenger-model", "emptyDir": {}}]
    pod_spec["initContainers"] = [
        {
            "name": "challenger-model",
            "image": image,
            # the server image has no shell or cp, but its Python copies the directory
            "command": ["python3", "-c", _COPY_MODEL],
            "volumeMounts": [{"name": "challenger-model", "mountPath": "/challenger"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
            "securityContext": dict(container.get("securityContext", {})),
        }
    ]
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": "challenger-model", "mountPath": CHALLENGER_MOUNT, "readOnly": True},
    ]
    container["env"] = [
        *container["env"],
        {"name": "CHALLENGER_DIR", "value": f"{CHALLENGER_MOUNT}/model"},
        {"name": "ROUTE", "value": challenger.route},
    ]


def _canary_percent(route: str) -> int:
    percent = float(route.split(":", 1)[1])
    if not percent.is_integer():
        raise ManifestError(f"KServe's canaryTrafficPercent is a whole percent; {route} is not")
    return int(percent)


def render_serving(
    served: ServedVersion,
    settings: KubeSettings,
    template_dir: Path = TEMPLATE_DIR,
    challenger: ChallengerVersion | None = None,
) -> list[dict]:
    """[Deployment, Service, HorizontalPodAutoscaler, InferenceService] for one version, or for a
    champion and a challenger (see the module's docstring)."""
    docs = list(yaml.safe_load_all((template_dir / TEMPLATE).read_text()))
    kinds = [doc.get("kind") for doc in docs]
    if kinds != ["Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService"]:
        raise ManifestError(f"{template_dir / TEMPLATE} holds {kinds}")
    deployment, service, autoscaler, inference = docs
    name = _dns_name(served.model_name)
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "server"}
    labels = {**PART_OF, **selector, "app.kubernetes.io/version": _dns_name(f"v{served.version}")}
    image = registry_image(served.image, settings)
    peak = served.memory_peak_mb + (challenger.memory_peak_mb if challenger is not None else 0.0)
    memory = memory_quantities(peak)
    for doc in docs:
        doc["metadata"].update(name=name, namespace=settings.namespace)
        doc["metadata"]["labels"] = dict(labels)
    annotations = {
        "sentclf.model-version": served.version,
        "sentclf.server-memory-peak-mb": f"{served.memory_peak_mb:.1f}",
    }
    if challenger is not None:
        annotations |= {"sentclf.challenger-version": challenger.version, "sentclf.route": challenger.route}
    deployment["metadata"]["annotations"] = annotations
    deployment["spec"]["selector"]["matchLabels"] = dict(selector)
    pod = deployment["spec"]["template"]
    pod["metadata"]["labels"] = dict(labels)
    (container,) = pod["spec"]["containers"]
    _set_container(container, image, memory)
    service["spec"]["selector"] = dict(selector)
    autoscaler["spec"]["scaleTargetRef"]["name"] = name
    inference["metadata"]["annotations"] = {**inference["metadata"]["annotations"], **annotations}
    (predictor,) = inference["spec"]["predictor"]["containers"]
    _set_container(predictor, image, memory)
    if challenger is not None:
        challenger_image = registry_image(challenger.image, settings)
        _hold_challenger(pod["spec"], container, challenger, challenger_image)
        if challenger.route == SHADOW_ROUTE:
            _hold_challenger(inference["spec"]["predictor"], predictor, challenger, challenger_image)
        else:
            predictor["image"] = challenger_image
            inference["spec"]["predictor"]["canaryTrafficPercent"] = _canary_percent(challenger.route)
            kept = {k: v for k, v in inference["metadata"]["annotations"].items() if "autoscal" not in k}
            kept = {
                k: v for k, v in kept.items() if not k.endswith(("/metric", "/targetUtilizationPercentage"))
            }
            inference["metadata"]["annotations"] = {**kept, "serving.kserve.io/deploymentMode": "Serverless"}
    if settings.pull_secret:
        pod["spec"]["imagePullSecrets"] = [{"name": settings.pull_secret}]
        inference["spec"]["predictor"]["imagePullSecrets"] = [{"name": settings.pull_secret}]
    return docs


def serving_manifests(
    model_uri: str,
    settings: KubeSettings,
    memory_mb: float | None = None,
    challenger_uri: str | None = None,
    route: str = SHADOW_ROUTE,
) -> list[dict]:
    """The manifests of a registered version (and a challenger), looked up in the tracking store."""
    name, version, image = resolve_version(model_uri)
    peak = memory_mb if memory_mb is not None else measured_memory_mb(image)
    challenger = None
    if challenger_uri:
        try:
            route = check_route(route)
        except ServeError as exc:
            raise ManifestError(str(exc)) from None
        _, challenger_version, challenger_image = resolve_version(challenger_uri)
        if challenger_version == version:
            raise ManifestError(f"{model_uri} and {challenger_uri} are the same version ({version})")
        challenger_peak = memory_mb if memory_mb is not None else measured_memory_mb(challenger_image)
        challenger = ChallengerVersion(challenger_version, challenger_image, challenger_peak, route)
    return render_serving(ServedVersion(name, version, image, peak), settings, challenger=challenger)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.serving_manifests", description=__doc__)
    parser.add_argument("model_uri", nargs="?", default=DEFAULT_CHAMPION_URI)
    parser.add_argument("--memory-mb", type=float, help="peak memory (default: its evaluate run's)")
    parser.add_argument("--challenger", default="", help="a second version's model URI, served beside it")
    parser.add_argument("--route", default=SHADOW_ROUTE, help="with --challenger: shadow or split:<percent>")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        docs = serving_manifests(
            args.model_uri, KubeSettings.from_env(), args.memory_mb, args.challenger or None, args.route
        )
    except (ManifestError, KubeSettingsError) as error:  # a version, a setting, a route: one line, no YAML
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
