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
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

import mlflow

from sentclf.contract import SERVED_NAME_TAG

NAMESPACE_TAG = "sentclf.image_namespace"
MODEL_NAME_LABEL = "sentclf.model_name"
MODEL_VERSION_LABEL = "sentclf.model_version"
NAMESPACE_LABEL = "sentclf.image_namespace"
# The inference server's room: the repository's `server/` on the host, `/opt/sentclf/server` in the step image
# (the Dockerfile copies it beside this package), and what of it goes into a server image's build context.
SERVER_DIR = Path(__file__).resolve().parent.parent / "server"
SERVER_SOURCES = ("Dockerfile", ".dockerignore", "requirements.txt", "slim_rootfs.py", "sentclf_server")
# What every image built before the served name followed the registered model answered to.
LEGACY_SERVED_NAME = "cola"


def served_model_name(registered_name: str) -> str:
    """The model name the server answers to (`/v2/models/<name>/infer`): the registered name without its
    `-classifier`, kept to characters a URL path takes as they are: `cola-classifier` -> `cola`,
    `Support Tickets-classifier` -> `support-tickets`."""
    base = registered_name.lower().removesuffix("-classifier")
    return re.sub(r"[^a-z0-9_.-]+", "-", base).strip("-.") or "model"


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
