"""Building step: put a registered ONNX model and its tokenizer into the inference-server image.

The image (building/server/: ONNX Runtime + tokenizers behind the KServe v2 gRPC protocol, no PyTorch)
is built on the host's engine, tagged `<registered model>-server:<version>`, smoke-tested (start, health
SERVING, one inference, remove), and recorded as the run tag `server_image` and a model version tag.
"""

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np

from sentclf.containers import docker_client, running_server
from sentclf.images import build_image, resolve_base_image, write_build_inputs
from sentclf.kserve_client import classify, connect
from sentclf.tracking import StepInputError, step_run

logger = logging.getLogger("building")

SERVER_DIR = Path(__file__).resolve().parent / "server"
SERVER_SOURCES = ("Dockerfile", ".dockerignore", "requirements.txt", "slim_rootfs.py", "sentclf_server")
MODEL_FILES = {
    "model.onnx": "model.onnx",
    "tokenizer.json": "extra_files/tokenizer.json",
    "serving_config.json": "extra_files/serving_config.json",
}
SMOKE_SENTENCES = ["The cat sat on the mat.", "Cat the mat on sat the."]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model-uri", required=True, help="models:/<name>/<version> or models:/<name>@<alias>"
    )
    parser.add_argument("--base-image", required=True, help="`auto`, or an image to build FROM")
    parser.add_argument("--serving-model-name", required=True, help="the model name clients ask for")
    return parser.parse_args(argv)


def resolve_model_version(model_uri: str) -> tuple[str, str]:
    """(registered name, version) of a `models:/name/version` or `models:/name@alias` URI."""
    if not model_uri.startswith("models:/"):
        raise StepInputError(f"model_uri {model_uri!r} is not a registry URI: use models:/<name>/<version>")
    reference = model_uri.removeprefix("models:/")
    client = mlflow.MlflowClient()
    try:
        if "@" in reference:
            name, alias = reference.split("@", 1)
            return name, str(client.get_model_version_by_alias(name, alias).version)
        name, version = reference.rsplit("/", 1)
        return name, str(client.get_model_version(name, version).version)
    except (ValueError, mlflow.exceptions.MlflowException) as error:
        raise StepInputError(f"model_uri {model_uri!r} names no registered model version: {error}") from None


def assemble_context(model_uri: str, context: Path) -> None:
    """Server sources, optional build inputs, and model/ (model.onnx, tokenizer.json, serving_config.json)."""
    for name in SERVER_SOURCES:
        source = SERVER_DIR / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    write_build_inputs(context / "build-inputs")
    downloaded = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(context / "download"))
    )
    (context / "model").mkdir()
    for target, relative in MODEL_FILES.items():
        if not (downloaded / relative).is_file():
            raise StepInputError(f"model {model_uri} lacks {relative}: was it logged by the train step?")
        shutil.copy2(downloaded / relative, context / "model" / target)
    shutil.rmtree(context / "download")


def smoke_test(image: str, serving_model_name: str, version: str) -> float:
    """Start the image, wait for SERVING, classify two sentences, remove it. Returns seconds to SERVING."""
    with running_server(image, name_prefix="sentclf-smoke") as (_, port, seconds_to_serving):
        labels, probabilities = classify(connect(port), serving_model_name, SMOKE_SENTENCES, version)
    if labels.shape != (len(SMOKE_SENTENCES),) or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise RuntimeError(f"smoke test: unexpected answer labels={labels} probabilities={probabilities}")
    logger.info("smoke test passed: labels %s, SERVING after %.2fs", labels.tolist(), seconds_to_serving)
    return seconds_to_serving


def run(args: argparse.Namespace) -> None:
    name, version = resolve_model_version(args.model_uri)
    pinned_uri = f"models:/{name}/{version}"
    client = docker_client()
    base = resolve_base_image(client, args.base_image)
    tag = f"{name}-server:{version}"
    mlflow.log_params({"model_name": name, "model_version": version, "resolved_base_image": base})
    with tempfile.TemporaryDirectory(prefix="sentclf-building-") as tmp:
        context = Path(tmp)
        assemble_context(pinned_uri, context)
        serving_config = json.loads((context / "model" / "serving_config.json").read_text())
        serving_config.update(model_name=args.serving_model_name, model_version=version)
        (context / "model" / "serving_config.json").write_text(json.dumps(serving_config, indent=2))
        image_id = build_image(
            client,
            context,
            tag,
            {"BASE_IMAGE": base},
            labels={
                "sentclf.model_uri": pinned_uri,
                "sentclf.build_run_id": mlflow.active_run().info.run_id,
            },
        )
    image_size = client.images.get(tag).attrs["Size"]
    mlflow.log_metrics({"server_image_size_mb": image_size / 1e6})
    mlflow.set_tag("server_image_id", image_id)
    logger.info("built %s (%s, %.0f MB)", tag, image_id[:19], image_size / 1e6)

    mlflow.log_metric("smoke_seconds_to_serving", smoke_test(tag, args.serving_model_name, version))
    # Only an image that passed its smoke test is handed on.
    mlflow.set_tag("server_image", tag)
    mlflow.MlflowClient().set_model_version_tag(name, version, "server_image", tag)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("building"):
        run(args)


if __name__ == "__main__":
    main()
