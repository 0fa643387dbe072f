"""Server image names: a tag that no other store or model can take, and labels that agree with the
registry.

A tag `<model>-server:<version>` is not unique: two clones on one machine, or a store wiped and started
again, both have a version 1, and the second build would retag the first one's image. So each registered
model carries a random image namespace (a registered-model tag created on its first build), and a tag is
`<model>-server:<version>-<hash>` with the hash over that namespace and everything baked into the image
(model files, server code, base image). A rebuild of the same content finds its image and reuses it; any
other content gets another tag. Nightly retraining adds an image per night: the conductor removes old ones
(conductor.image_gc) by the labels set here.
"""

import hashlib
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import mlflow

from sentclf.contract import SERVED_NAME_TAG
from sentclf_runtime.names import LEGACY_SERVED_NAME, served_model_name

__all__ = ["LEGACY_SERVED_NAME", "served_model_name"]  # the runtime's rule, re-exported for the rooms

NAMESPACE_TAG = "sentclf.image_namespace"
MODEL_NAME_LABEL = "sentclf.model_name"
MODEL_VERSION_LABEL = "sentclf.model_version"
NAMESPACE_LABEL = "sentclf.image_namespace"
# The inference server's room and the model's runtime: the repository's `server/` and `sentclf_runtime/`
# on the host, under /opt/sentclf in the step image (the Dockerfile copies them beside this package).
SERVER_DIR = Path(__file__).resolve().parent.parent / "server"
RUNTIME_DIR = Path(__file__).resolve().parent.parent / "sentclf_runtime"
# What a server process run from this checkout needs on its PYTHONPATH (tests, benches; an image has /app).
SERVER_PYTHONPATH = os.pathsep.join([str(SERVER_DIR), str(RUNTIME_DIR.parent)])
# A server image's build context, by name: the server room's files and the model's runtime it imports.
SERVER_SOURCES = {
    **{
        name: SERVER_DIR / name
        for name in ("Dockerfile", ".dockerignore", "requirements.txt", "slim_rootfs.py")
    },
    "sentclf_server": SERVER_DIR / "sentclf_server",
    "sentclf_runtime": RUNTIME_DIR,
}


def recorded_served_name(version_tags: Mapping[str, str]) -> str:
    """The name a version's image answers to: what building recorded on it, else `cola` (images built
    before it was recorded answer to that)."""
    return version_tags.get(SERVED_NAME_TAG) or LEGACY_SERVED_NAME


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
