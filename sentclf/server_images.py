"""Server images over their lifetime: a tag that no other store or model can take, labels that agree with
the registry, and garbage collection after each pipeline.

A tag `<model>-server:<version>` is not unique: two clones on one machine, or a store wiped and started
again, both have a version 1, and the second build would retag the first one's image. So each registered
model carries a random image namespace (a registered-model tag created on its first build), and a tag is
`<model>-server:<version>-<hash>` with the hash over that namespace and everything baked into the image
(model files, server code, base image). A rebuild of the same content finds its image and reuses it; any
other content gets another tag. Nightly retraining adds an image per night, so after each pipeline the
images of versions that are neither `champion`, `challenger` nor among the newest `keep` are removed.
"""

import contextlib
import hashlib
import logging
import uuid

import docker
import docker.errors
import mlflow

logger = logging.getLogger(__name__)

NAMESPACE_TAG = "sentclf.image_namespace"
VERSION_IMAGE_TAG = "server_image"
MODEL_NAME_LABEL = "sentclf.model_name"
MODEL_VERSION_LABEL = "sentclf.model_version"
NAMESPACE_LABEL = "sentclf.image_namespace"
KEPT_ALIASES = ("champion", "challenger")


def image_namespace(model_name: str, create: bool = True) -> str | None:
    """The registered model's image namespace, created on first use when `create`."""
    client = mlflow.MlflowClient()
    namespace = client.get_registered_model(model_name).tags.get(NAMESPACE_TAG)
    if namespace or not create:
        return namespace
    namespace = uuid.uuid4().hex[:12]
    client.set_registered_model_tag(model_name, NAMESPACE_TAG, namespace)
    return namespace


def server_image_tag(model_name: str, version: str, namespace: str, content_hash: str) -> str:
    digest = hashlib.sha256(f"{namespace}:{version}:{content_hash}".encode()).hexdigest()[:12]
    return f"{model_name}-server:{version}-{digest}"


def image_labels(model_name: str, version: str, namespace: str) -> dict[str, str]:
    return {MODEL_NAME_LABEL: model_name, MODEL_VERSION_LABEL: version, NAMESPACE_LABEL: namespace}


def versions_to_keep(model_name: str, keep: int) -> set[str]:
    """The `champion` and `challenger` versions and the newest `keep` versions of the model."""
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{model_name}'")
    newest = sorted((int(v.version) for v in versions), reverse=True)[:keep]
    kept = {str(number) for number in newest}
    for alias in KEPT_ALIASES:
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            kept.add(str(client.get_model_version_by_alias(model_name, alias).version))
    return kept


def collect_server_images(engine: docker.DockerClient, model_name: str, keep: int) -> list[str]:
    """Remove this store's server images of `model_name` that no kept version serves; returns the tags
    removed. An image a container still uses is left for next time."""
    namespace = image_namespace(model_name, create=False)
    if namespace is None:
        return []
    kept_versions = versions_to_keep(model_name, keep)
    client = mlflow.MlflowClient()
    # The registry returns versions as int or str depending on the store: compare them as text.
    current = {
        str(v.version): v.tags.get(VERSION_IMAGE_TAG)
        for v in client.search_model_versions(f"name = '{model_name}'")
        if str(v.version) in kept_versions
    }
    labels = [f"{MODEL_NAME_LABEL}={model_name}", f"{NAMESPACE_LABEL}={namespace}"]
    removed = []
    for image in engine.images.list(filters={"label": labels}):
        version = image.labels.get(MODEL_VERSION_LABEL)
        if current.get(version) in image.tags:
            continue
        for tag in image.tags or [image.id]:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                engine.images.remove(tag)
                removed.append(tag)
    if removed:
        logger.info("removed %d server image(s) of old versions: %s", len(removed), ", ".join(removed))
    return removed
