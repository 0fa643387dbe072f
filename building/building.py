"""Building step: put a registered ONNX model and its tokenizer into the inference-server image.

The image (the `server/` room and the model's runtime `sentclf_runtime/`, both baked into the step image
beside `sentclf`: ONNX Runtime + tokenizers behind the KServe v2 gRPC protocol, no PyTorch)
is built on the host's engine, tagged `<registered model>-server:<version>-<hash>` (unique per store and
content, see sentclf.server_images; an image of the same content is reused, never retagged),
smoke-tested (start, health SERVING, one inference, remove), and recorded as the run tag `server_image`
and a model version tag, beside `served_model_name`: the model name it answers to (by default the
registered name without `-classifier`, so `cola-classifier` serves `cola` and `trec-classifier` `trec`).
"""

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

import docker
import docker.errors
import mlflow
import numpy as np

from sentclf.containers import checkout_labels, docker_client, run_labels, running_server
from sentclf.contract import SERVED_NAME_TAG, SERVER_IMAGE_TAG, ModelRef, parse_model_uri
from sentclf.images import (
    DEFAULT_BASE_IMAGE,
    build_with_builder_cache,
    resolve_base_image,
    source_hash,
    this_checkout,
    write_build_inputs,
)
from sentclf.kserve_client import classify, connect
from sentclf.server_images import (
    SERVER_SOURCES,
    image_labels,
    image_namespace,
    served_model_name,
    server_image_tag,
)
from sentclf.tracking import StepInputError, step_run
from sentclf_runtime.config import ServingConfig
from sentclf_runtime.files import model_files
from sentclf_runtime.pairs import pair_input

logger = logging.getLogger("building")

SMOKE_SENTENCES = ["The cat sat on the mat.", "Cat the mat on sat the."]
# In a cluster: the registry the conductor's Job names for the server image (kubernetes/README.md).
REGISTRY_ENV = "SENTCLF_REGISTRY"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model-uri", required=True, help="models:/<name>/<version> or models:/<name>@<alias>"
    )
    parser.add_argument("--base-image", required=True, help="`auto`, or an image to build FROM")
    parser.add_argument(
        "--serving-model-name", default="", help="the model name clients ask for (default: from the model's)"
    )
    # In a cluster there is no Docker engine: one container prepares the context, kaniko builds and
    # pushes it, another records the pushed image (kubernetes/README.md). Without these: the local engine.
    parser.add_argument("--context-dir", default="", help="a directory shared with the image builder")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--prepare-only", action="store_true", help="write the build context, destination and base image"
    )
    cluster.add_argument(
        "--record-pushed-image", action="store_true", help="tag the run and version with the pushed image"
    )
    args = parser.parse_args(argv)
    if (args.prepare_only or args.record_pushed_image) and not args.context_dir:
        parser.error("--prepare-only and --record-pushed-image need --context-dir")
    return args


def resolve_model_version(model_uri: str) -> tuple[str, str]:
    """(registered name, version) of a `models:/name/version` or `models:/name@alias` URI."""
    try:
        ref = parse_model_uri(model_uri)
    except ValueError as error:
        raise StepInputError(f"model_uri: {error}") from None
    client = mlflow.MlflowClient()
    try:
        if ref.alias:
            return ref.name, str(client.get_model_version_by_alias(ref.name, ref.alias).version)
        return ref.name, str(client.get_model_version(ref.name, ref.version).version)
    except mlflow.exceptions.MlflowException as error:
        raise StepInputError(f"model_uri {model_uri!r} names no registered model version: {error}") from None


def assemble_context(model_uri: str, context: Path) -> None:
    """Server sources, optional build inputs, and model/ (model.onnx, tokenizer.json, serving_config.json)."""
    for name, source in SERVER_SOURCES.items():
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    write_build_inputs(context / "build-inputs")
    downloaded = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(context / "download"))
    )
    (context / "model").mkdir()
    # The text-level pyfunc's artifacts/, or an earlier version's onnx flavor with extra_files/.
    try:
        files = model_files(downloaded)
    except FileNotFoundError as error:
        raise StepInputError(f"model {model_uri}: {error}") from None
    for target, path in files.items():
        shutil.copy2(path, context / "model" / target)
    shutil.rmtree(context / "download")


def smoke_items(config: ServingConfig) -> list:
    """What the smoke test sends: two sentences, or for a sentence-pair model two (text, text_pair) pairs."""
    if pair_input(config) is None:
        return list(SMOKE_SENTENCES)
    return list(zip(SMOKE_SENTENCES, reversed(SMOKE_SENTENCES), strict=True))


def answer_is_sound(
    labels: np.ndarray, probabilities: np.ndarray, items: list, config: ServingConfig
) -> bool:
    """One label per item, and probabilities that sum to 1 per item (softmax), or for a multi-label model
    each in [0, 1] (a sigmoid per label)."""
    if labels.shape != (len(items),) or probabilities.shape != (len(items), len(config.labels)):
        return False
    if config.multi_label:
        return bool(((probabilities >= 0) & (probabilities <= 1)).all())
    return bool(np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4))


def smoke_test(image: str, serving_model_name: str, version: str, config: ServingConfig) -> float:
    """Start the image, wait for SERVING, classify two items, remove it. Returns seconds to SERVING."""
    items = smoke_items(config)
    with running_server(image, name_prefix="sentclf-smoke", labels=run_labels(mlflow.active_run())) as (
        _,
        port,
        seconds_to_serving,
    ):
        labels, probabilities = classify(connect(port), serving_model_name, items, version)
    if not answer_is_sound(labels, probabilities, items, config):
        raise RuntimeError(f"smoke test: unexpected answer labels={labels} probabilities={probabilities}")
    logger.info("smoke test passed: labels %s, SERVING after %.2fs", labels.tolist(), seconds_to_serving)
    return seconds_to_serving


def build_server_image(client: docker.DockerClient, context: Path, name: str, version: str, base: str) -> str:
    """Build the image from the assembled context, or reuse the one built from the same content."""
    namespace = image_namespace(name)
    content = source_hash(context, (*SERVER_SOURCES, "model"), extra=client.images.get(base).id)
    tag = server_image_tag(name, version, namespace, content)
    try:
        client.images.get(tag)
        logger.info("reusing %s: an image of exactly this model, server and base image exists", tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    build_with_builder_cache(
        client,
        context,
        tag,
        {"BASE_IMAGE": base},
        labels=image_labels(name, version, namespace)
        | checkout_labels()
        | {
            "sentclf.model_uri": ModelRef(name, version).uri,
            "sentclf.build_run_id": mlflow.active_run().info.run_id,
        },
        # One builder stage per checkout: another clone's build must not supersede (and remove) ours.
        cache_tag=f"{tag.rsplit(':', 1)[0]}-builder:{this_checkout()}",
    )
    return tag


def served_name(args: argparse.Namespace, name: str) -> str:
    return args.serving_model_name or served_model_name(name)


def record_image(name: str, version: str, image: str, served: str) -> None:
    """Tag the run and the version with the image and the model name it answers to (evaluate and the
    conductor read them)."""
    client = mlflow.MlflowClient()
    for key, value in ((SERVER_IMAGE_TAG, image), (SERVED_NAME_TAG, served)):
        mlflow.set_tag(key, value)
        client.set_model_version_tag(name, version, key, value)


def prepare_context(args: argparse.Namespace, name: str, version: str, context: Path) -> None:
    """Server sources, build inputs and the version's model, with its serving name and version set."""
    assemble_context(ModelRef(name, version).uri, context)
    config = ServingConfig.read(context / "model")
    config.served_as(served_name(args, name), version).write(context / "model")


def prepare_for_cluster(args: argparse.Namespace, name: str, version: str, context: Path) -> None:
    """The context for kaniko, and where it pushes (`destination`) and from what (`base-image`)."""
    registry = os.environ.get(REGISTRY_ENV, "").rstrip("/")
    if not registry:
        raise StepInputError(f"{REGISTRY_ENV} is not set: the registry the server image is pushed to")
    base = DEFAULT_BASE_IMAGE if args.base_image == "auto" else args.base_image  # no engine to ask here
    mlflow.log_params({"model_name": name, "model_version": version, "resolved_base_image": base})
    prepare_context(args, name, version, context)
    (context / "destination").write_text(f"{registry}/{name}-server:{version}\n")
    (context / "base-image").write_text(base + "\n")
    logger.info(
        "build context for %s/%s-server:%s from %s prepared in %s", registry, name, version, base, context
    )


def record_pushed_image(name: str, version: str, context: Path) -> None:
    """Tag the run and the version with the image the builder pushed, pinned by its digest."""
    values = {}
    for file in ("destination", "digest"):
        path = context / file
        values[file] = path.read_text().strip() if path.is_file() else ""
        if not values[file]:
            raise StepInputError(
                f"{path} is missing or empty: the image builder did not push the server image"
            )
    image = f"{values['destination']}@{values['digest']}"
    served = ServingConfig.read(context / "model").model_name
    record_image(name, version, image, served)
    logger.info("recorded the pushed image %s (serves the model name %r)", image, served)


def run(args: argparse.Namespace) -> None:
    name, version = resolve_model_version(args.model_uri)
    if args.prepare_only:
        prepare_for_cluster(args, name, version, Path(args.context_dir))
        return
    if args.record_pushed_image:
        record_pushed_image(name, version, Path(args.context_dir))
        return
    client = docker_client()
    base = resolve_base_image(client, args.base_image)
    mlflow.log_params({"model_name": name, "model_version": version, "resolved_base_image": base})
    with tempfile.TemporaryDirectory(prefix="sentclf-building-") as tmp:
        context = Path(tmp)
        prepare_context(args, name, version, context)
        tag = build_server_image(client, context, name, version, base)
        config = ServingConfig.read(context / "model")
    image = client.images.get(tag)
    mlflow.log_metrics({"server_image_size_mb": image.attrs["Size"] / 1e6})
    mlflow.set_tag("server_image_id", image.id)
    logger.info("image %s (%s, %.0f MB)", tag, image.id[:19], image.attrs["Size"] / 1e6)

    served = served_name(args, name)
    mlflow.log_metric("smoke_seconds_to_serving", smoke_test(tag, served, version, config))
    # Only an image that passed its smoke test is handed on.
    record_image(name, version, tag, served)
    logger.info("%s answers to the model name %r", tag, served)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("building"):
        run(args)


if __name__ == "__main__":
    main()
