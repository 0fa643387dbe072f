"""Server images over a store's lifetime: nightly retraining adds an image per night, so after each pipeline
the conductor removes the images of versions that are neither `champion`, `challenger` nor among the
newest `keep`. Images are found by the labels the building step gives them (sentclf.server_images)."""

import contextlib
import logging

import docker
import docker.errors
import mlflow

from sentclf.contract import CHALLENGER_ALIAS, CHAMPION_ALIAS, SERVER_IMAGE_TAG
from sentclf.server_images import MODEL_NAME_LABEL, MODEL_VERSION_LABEL, NAMESPACE_LABEL, image_namespace

logger = logging.getLogger(__name__)

KEPT_ALIASES = (CHAMPION_ALIAS, CHALLENGER_ALIAS)


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
        str(v.version): v.tags.get(SERVER_IMAGE_TAG)
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
