"""Building images from a prepared context, shared by the conductor (the step image, conductor.step_image)
and the building step (the server image): the base Python image, build inputs (a proxy's CA), builds that
leave no dangling builder stage behind."""

import contextlib
import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import docker
import docker.errors

logger = logging.getLogger(__name__)

# The step image (and the score image built FROM it) is one per checkout: two clones on one machine (a
# team member's and the nightly job's) must not rebuild each other's image back and forth, nor run their
# steps in the other's. The tag is the checkout's id (a hash of its path); the repository holds the
# canonical tag `latest` in each MLproject's `docker_env.image`, and `make images` (conductor.step_image)
# writes the checkout's tag there, with a git filter that keeps `git status` and commits canonical.
STEP_REPOSITORY = "sentclf-step"
SCORE_REPOSITORY = "sentclf-score"
CANONICAL_TAG = "latest"
CHECKOUT_LABEL = "sentclf.checkout"  # on the step and score images, and on every container a step starts
CHECKOUT_ENV = "SENTCLF_CHECKOUT"  # set in the step image: the checkout it was built from
_PINNED_IMAGE = re.compile(rf"^(  image: (?:{STEP_REPOSITORY}|{SCORE_REPOSITORY})):(\S+)$", re.M)
DEFAULT_BASE_IMAGE = "python:3.11-slim"
# Built by scripts/build-base-image.sh (debootstrap) where no registry can be reached.
LOCAL_BASE_IMAGE = "sentclf/python-base:3.11-bookworm"
SOURCE_HASH_LABEL = "sentclf.source-hash"
BUILD_CA_IN_STEP_IMAGE = Path("/etc/sentclf/build-ca.crt")


class ImageError(RuntimeError):
    """An image could not be found or built; the message says what to do."""


def image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def resolve_base_image(client: docker.DockerClient, requested: str = "auto") -> str:
    """The base image to build FROM. `auto`: python:3.11-slim if present or pullable, else the local
    debootstrap image. A named image must be present or pullable."""
    candidates = [DEFAULT_BASE_IMAGE, LOCAL_BASE_IMAGE] if requested == "auto" else [requested]
    for name in candidates:
        if image_exists(client, name):
            return name
        if name == LOCAL_BASE_IMAGE:
            continue
        try:
            logger.info("pulling %s", name)
            client.images.pull(name)
            return name
        except docker.errors.APIError as error:
            logger.info("cannot pull %s: %s", name, getattr(error, "explanation", error))
    raise ImageError(
        f"no base image: {' nor '.join(candidates)} is present or pullable. Build the local one with "
        f"`scripts/build-base-image.sh {LOCAL_BASE_IMAGE}` (Debian host, root) or `make images`."
    )


def checkout_id(root: Path) -> str:
    """The checkout's id: the first 12 hex digits of the sha256 of its resolved path (`pwd -P`)."""
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]


def current_checkout() -> str | None:
    """Inside a step's container, the checkout whose step image it runs (None on the host)."""
    return os.environ.get(CHECKOUT_ENV) or None


def this_checkout() -> str:
    """The checkout this code belongs to: the step image's (in a container), else the repository holding
    this package (on the host, an editable install)."""
    return current_checkout() or checkout_id(Path(__file__).resolve().parents[1])


def step_image(root: Path | None = None) -> str:
    """The step image of the checkout at `root` (default: this one)."""
    return f"{STEP_REPOSITORY}:{checkout_id(root) if root else this_checkout()}"


def score_image(root: Path | None = None) -> str:
    """The score sub-project's image of the checkout at `root` (default: this one), FROM its step image."""
    return f"{SCORE_REPOSITORY}:{checkout_id(root) if root else this_checkout()}"


def checkout_filter(root: Path | None = None) -> str:
    """A Docker `label` filter matching what the checkout (default: this one) built or started."""
    return f"{CHECKOUT_LABEL}={checkout_id(root) if root else this_checkout()}"


def pin_images(mlproject: str, tag: str) -> str:
    """An MLproject's text with its step or score image tagged `tag` (CANONICAL_TAG: the repository's)."""
    return _PINNED_IMAGE.sub(lambda m: f"{m[1]}:{tag}", mlproject)


def pinned_image(project_dir: Path) -> str | None:
    """The image an MLproject's `docker_env.image` names, as `mlflow run` will use it."""
    found = _PINNED_IMAGE.search((Path(project_dir) / "MLproject").read_text())
    return found[0].split("image: ", 1)[1] if found else None


def source_hash(root: Path, sources: tuple[str, ...], extra: str = "") -> str:
    """A hash over the named files and directories (excluding caches), plus `extra`."""
    digest = hashlib.sha256(extra.encode())
    for name in sources:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(root)).encode())
            content = file.read_bytes()
            if file.name == "MLproject":  # as the repository holds it, whichever checkout pinned it
                content = pin_images(content.decode(), CANONICAL_TAG).encode()
            digest.update(content)
    return digest.hexdigest()[:16]


def build_ca_file() -> Path | None:
    """An extra CA bundle for pip inside builds (a TLS-intercepting proxy's), if this machine has one.

    Looked up in SENTCLF_BUILD_CA, PIP_CERT, SSL_CERT_FILE, then the step image's copy. It is a build
    input only: Dockerfiles use it in a builder stage and never copy it into a final image.
    """
    for variable in ("SENTCLF_BUILD_CA", "PIP_CERT", "SSL_CERT_FILE"):
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            return Path(value)
    if BUILD_CA_IN_STEP_IMAGE.is_file() and BUILD_CA_IN_STEP_IMAGE.stat().st_size:
        return BUILD_CA_IN_STEP_IMAGE
    return None


def write_build_inputs(inputs_dir: Path) -> None:
    """Fill `inputs_dir` with ca.crt (empty when there is no extra CA) for a Dockerfile's builder stage."""
    inputs_dir.mkdir(parents=True, exist_ok=True)
    ca = build_ca_file()
    target = inputs_dir / "ca.crt"
    if ca is None:
        target.write_bytes(b"")
    else:
        shutil.copyfile(ca, target)


def build_image(
    client: docker.DockerClient,
    context_dir: Path,
    tag: str,
    buildargs: dict[str, str],
    labels: dict[str, str] | None = None,
    dockerfile: str = "Dockerfile",
    target: str | None = None,
) -> str:
    """Build with host networking, streaming the build's output to the log; returns the image id."""
    logger.info("building %s from %s", tag, context_dir)
    image_id = None
    stream = client.api.build(
        path=str(context_dir),
        tag=tag,
        buildargs=buildargs,
        labels=labels or {},
        dockerfile=dockerfile,
        network_mode="host",
        rm=True,
        forcerm=True,
        decode=True,
        target=target,
    )
    for chunk in stream:
        if "error" in chunk:
            raise ImageError(f"building {tag} failed: {chunk['error'].strip()}")
        line = chunk.get("stream", "").rstrip()
        if line:
            logger.info("[build %s] %s", tag, line)
        image_id = chunk.get("aux", {}).get("ID", image_id)
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id


def _image_id(client: docker.DockerClient, name: str) -> str | None:
    try:
        return client.images.get(name).id
    except docker.errors.ImageNotFound:
        return None


def _remove_if_untagged(client: docker.DockerClient, image_id: str | None) -> None:
    """Remove an image a rebuild has superseded, unless something still tags or uses it."""
    if image_id is None:
        return
    with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
        if not client.images.get(image_id).tags:
            client.images.remove(image_id)
            logger.info("removed superseded image %s", image_id[:19])


def build_with_builder_cache(
    client: docker.DockerClient,
    context_dir: Path,
    tag: str,
    buildargs: dict[str, str],
    labels: dict[str, str] | None = None,
    builder_stage: str = "builder",
    cache_tag: str | None = None,
) -> str:
    """Build a multi-stage image without leaving a dangling builder stage behind.

    The legacy builder keeps each build's builder stage as an untagged image: the layer cache of the next
    build, and a dangling image per build otherwise (573 MB per server image, 2.5 GB per step image). Here
    the builder stage is built and tagged first (`<repository>-builder:cache`, one per repository), the
    full build reuses it from the cache, and the builder and final images it supersedes are removed.
    `cache_tag` names the builder's tag where one per repository is not enough (one per checkout).
    """
    cache_tag = cache_tag or f"{tag.rsplit(':', 1)[0]}-builder:cache"
    superseded = [_image_id(client, cache_tag), _image_id(client, tag)]
    build_image(client, context_dir, cache_tag, buildargs, target=builder_stage)
    image_id = build_image(client, context_dir, tag, buildargs, labels)
    for old in superseded:
        if old not in (image_id, _image_id(client, cache_tag)):
            _remove_if_untagged(client, old)
    return image_id
