"""`make serve`: a registered version's server image on this machine, in the foreground.

    python -m tools.serve [--model models:/cola-classifier@champion] [--http-port 8000] ...

The model URI names a version (`models:/<name>/<version>`) or an alias (`models:/<name>@<alias>`); the
image is the one the building step tagged that version with (`server_image`). The container runs on the
host network with the three ports printed, its log follows on stdout, and Ctrl-C (or SIGTERM) stops it
with the server's own drain and removes it. `--capture-dir <folder>` (`make serve CAPTURE=<folder>`) mounts
that folder and turns the server's capture on, so `mlflow run monitor -P traffic=<folder>` has traffic.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import uuid
from pathlib import Path

import docker
import docker.errors
import mlflow

from sentclf.containers import checkout_labels
from sentclf.contract import DEFAULT_CHAMPION_URI, SERVER_IMAGE_TAG, ModelRef, parse_model_uri
from sentclf.server_images import recorded_served_name

DEFAULT_MODEL = DEFAULT_CHAMPION_URI
CONTAINER_LABEL = "sentclf.serve"


class ServeError(RuntimeError):
    """The version or its image cannot be found; the message says what to run."""


def resolve_image(model_uri: str, client: mlflow.MlflowClient | None = None) -> tuple[str, str, str]:
    """(model name, version, server image) of a `models:/name/version` or `models:/name@alias` URI."""
    try:
        ref = parse_model_uri(model_uri)
    except ValueError as error:
        raise ServeError(str(error)) from None
    client = client or mlflow.MlflowClient()
    name = ref.name
    try:
        if ref.alias:
            version = client.get_model_version_by_alias(name, ref.alias)
        else:
            version = client.get_model_version(name, ref.version)
    except mlflow.exceptions.MlflowException as exc:
        raise ServeError(
            f"{model_uri}: no such version in {mlflow.get_tracking_uri()} ({exc.message}); "
            "`make run` registers versions, the gate moves `champion`"
        ) from None
    image = version.tags.get(SERVER_IMAGE_TAG)
    if not image:
        raise ServeError(
            f"{model_uri} (version {version.version}) has no server image; build it with "
            f"`mlflow run building -P model_uri={ModelRef(name, str(version.version)).uri}`"
        )
    return name, str(version.version), image


def capture_volume(folder: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The server's environment and volume for capturing into `folder` (it must exist: the server runs as
    uid 10001 and writes there, so its owner decides who may, e.g. `chmod 777`)."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ServeError(f"capture folder {folder} does not exist: mkdir -p {folder} && chmod 777 {folder}")
    return {"CAPTURE_DIR": "/traffic"}, {str(folder): {"bind": "/traffic", "mode": "rw"}}


def serve(
    model_uri: str, http_port: int, grpc_port: int, metrics_port: int, capture_dir: Path | None = None
) -> int:
    name, version, image = resolve_image(model_uri)
    capture_env, volumes = capture_volume(capture_dir) if capture_dir else ({}, {})
    served = recorded_served_name(mlflow.MlflowClient().get_model_version(name, version).tags)
    engine = docker.from_env()
    try:
        engine.images.get(image)
    except docker.errors.ImageNotFound:
        raise ServeError(
            f"image {image} of {name} version {version} is not on this machine; rebuild it with "
            f"`mlflow run building -P model_uri={ModelRef(name, version).uri}`"
        ) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    container = engine.containers.run(
        image,
        detach=True,
        name=f"sentclf-serve-{name}-{version}-{uuid.uuid4().hex[:6]}",
        network_mode="host",
        environment={
            "HTTP_PORT": str(http_port),
            "GRPC_PORT": str(grpc_port),
            "METRICS_PORT": str(metrics_port),
            **capture_env,
        },
        volumes=volumes,
        labels={CONTAINER_LABEL: "1"} | checkout_labels(),
    )
    try:
        print(f"serving {name} version {version} from {image} (container {container.name})", flush=True)
        routes = f"/v2/health/ready, /v2/models/{served}/infer"
        print(f"  HTTP     http://127.0.0.1:{http_port}  ({routes})", flush=True)
        print(f"  gRPC     127.0.0.1:{grpc_port}", flush=True)
        print(f"  metrics  http://127.0.0.1:{metrics_port}/metrics", flush=True)
        if capture_dir:
            print(f"  capture  every answered request into {next(iter(volumes))}", flush=True)
        print("Ctrl-C stops and removes it.", flush=True)
        follower = threading.Thread(target=_follow, args=(container,), daemon=True)
        follower.start()
        while not stop.wait(0.5):
            container.reload()
            if container.status == "exited":
                code = container.attrs["State"]["ExitCode"]
                print(f"the server exited with {code}", file=sys.stderr, flush=True)
                return code or 1
        print("stopping (the server drains in-flight requests)", flush=True)
        with contextlib.suppress(docker.errors.APIError):
            container.stop(timeout=30)
        follower.join(timeout=5)
        return 0
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
        print(f"removed {container.name}", flush=True)


def _follow(container: docker.models.containers.Container) -> None:
    with contextlib.suppress(Exception):
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model URI (default {DEFAULT_MODEL})")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--capture-dir", type=Path, help="capture every answered request into this folder")
    args = parser.parse_args(argv)
    try:
        return serve(args.model, args.http_port, args.grpc_port, args.metrics_port, args.capture_dir)
    except ServeError as exc:
        print(f"make serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
