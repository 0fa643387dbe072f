"""`make serve`: a registered version's server image on this machine, in the foreground; with a challenger,
one server holding both versions.

    python -m tools.serve [--model models:/cola-classifier@champion] [--http-port 8000] ...
    python -m tools.serve --model models:/cola-classifier@champion \
        --challenger models:/cola-classifier@challenger --route shadow|split:10

The model URI names a version (`models:/<name>/<version>`) or an alias (`models:/<name>@<alias>`); the
image is the one the building step tagged that version with (`server_image`). The container runs on the
host network with the three ports printed, its log follows on stdout, and Ctrl-C (or SIGTERM) stops it
with the server's own drain and removes it. `--capture-dir <folder>` (`make serve CAPTURE=<folder>`) mounts
that folder and turns the server's capture on, so `mlflow run monitor -P traffic=<folder>` has traffic;
`--feedback-dir <folder>` (`make serve FEEDBACK=<folder>`) mounts that one and turns the feedback endpoint on,
so labels posted to it reach `mlflow run monitor -P feedback=<folder>` (the two may be one folder).

With --challenger, one image holds both versions' files: the champion's server image with the challenger's
model directory copied in from its own server image (`<champion image>-with-v<challenger version>`, built
here from a two-line Dockerfile, nothing else rebuilt, removed again on exit), run with CHALLENGER_DIR and
ROUTE (server/README.md, "Two versions": why one server holds both).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import signal
import sys
import threading
import uuid
from pathlib import Path

import docker
import docker.errors
import mlflow

from sentclf.containers import checkout_labels
from sentclf.contract import DEFAULT_CHAMPION_URI, SERVER_IMAGE_TAG, SHADOW_ROUTE, ModelRef, parse_model_uri
from sentclf.server_images import recorded_served_name

DEFAULT_MODEL = DEFAULT_CHAMPION_URI
CHALLENGER_MODEL_DIR = "/models/challenger"
_ROUTE = re.compile(rf"^(?:{SHADOW_ROUTE}|split:(?P<percent>\d+(?:\.\d+)?))$")
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


def check_route(route: str) -> str:
    """ROUTE as the server takes it: `shadow` or `split:<percent 0-100>`; ServeError otherwise."""
    match = _ROUTE.match(route.strip().lower())
    if not match or (match["percent"] is not None and float(match["percent"]) > 100):
        raise ServeError(f"ROUTE={route!r}: use shadow, or split:<percent of callers 0-100>, e.g. split:10")
    return route.strip().lower()


def writable_volume(folder: Path, mount: str, variable: str) -> tuple[dict[str, str], dict[str, dict]]:
    """The server's environment and volume for writing into `folder` (it must exist: the server runs as
    uid 10001 and writes there, so its owner decides who may, e.g. `chmod 777`)."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ServeError(f"folder {folder} does not exist: mkdir -p {folder} && chmod 777 {folder}")
    return {variable: mount}, {str(folder): {"bind": mount, "mode": "rw"}}


def capture_volume(folder: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Capture every answered request into `folder` (CAPTURE_DIR)."""
    return writable_volume(folder, "/traffic", "CAPTURE_DIR")


def feedback_volume(folder: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Append the labels posted to the feedback endpoint to `folder` (FEEDBACK_DIR). The same folder as the
    capture's is one volume (the monitor reads labels and capture from one folder as well)."""
    return writable_volume(folder, "/feedback", "FEEDBACK_DIR")


def server_volumes(
    capture_dir: Path | None, feedback_dir: Path | None
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Environment and volumes for the capture and feedback folders given (each optional)."""
    environment: dict[str, str] = {}
    volumes: dict[str, dict[str, str]] = {}
    if capture_dir:
        env, vol = capture_volume(capture_dir)
        environment |= env
        volumes |= vol
    if feedback_dir:
        env, vol = feedback_volume(feedback_dir)
        host = next(iter(vol))
        if host in volumes:  # one folder for both: write the labels where the capture goes
            env = {"FEEDBACK_DIR": volumes[host]["bind"]}
            vol = {}
        environment |= env
        volumes |= vol
    return environment, volumes


def _local_image(engine: docker.DockerClient, image: str, name: str, version: str) -> None:
    try:
        engine.images.get(image)
    except docker.errors.ImageNotFound:
        raise ServeError(
            f"image {image} of {name} version {version} is not on this machine; rebuild it with "
            f"`mlflow run building -P model_uri={ModelRef(name, version).uri}`"
        ) from None


def both_versions_dockerfile(champion_image: str, challenger_image: str) -> str:
    """The champion's server image plus the challenger's model directory, copied from its server image."""
    return (
        f"FROM {champion_image}\n"
        f"COPY --from={challenger_image} /models/model {CHALLENGER_MODEL_DIR}\n"
        f"ENV CHALLENGER_DIR={CHALLENGER_MODEL_DIR}\n"
    )


def both_versions_image(
    engine: docker.DockerClient, champion_image: str, challenger_image: str, challenger_version: str
) -> str:
    """Build (or reuse) the image holding both versions; its tag names the challenger's version."""
    tag = f"{champion_image}-with-v{challenger_version}"
    dockerfile = both_versions_dockerfile(champion_image, challenger_image).encode()
    try:
        engine.images.build(
            fileobj=io.BytesIO(dockerfile),
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            labels=checkout_labels(),  # this clone's, like the images it was built from
        )
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise ServeError(f"cannot build {tag} from {champion_image} and {challenger_image}: {exc}") from None
    return tag


def serve(
    model_uri: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    capture_dir: Path | None = None,
    challenger_uri: str | None = None,
    route: str = SHADOW_ROUTE,
    feedback_dir: Path | None = None,
) -> int:
    if challenger_uri:
        route = check_route(route)  # before anything is looked up
    folders_env, volumes = server_volumes(capture_dir, feedback_dir)
    name, version, image = resolve_image(model_uri)
    served = recorded_served_name(mlflow.MlflowClient().get_model_version(name, version).tags)
    engine = docker.from_env()
    _local_image(engine, image, name, version)
    environment = {
        "HTTP_PORT": str(http_port),
        "GRPC_PORT": str(grpc_port),
        "METRICS_PORT": str(metrics_port),
        **folders_env,
    }
    described = f"{name} version {version}"
    if challenger_uri:
        challenger_name, challenger_version, challenger_image = resolve_image(challenger_uri)
        if (challenger_name, challenger_version) == (name, version):
            raise ServeError(f"{model_uri} and {challenger_uri} are the same version ({version}); name two")
        _local_image(engine, challenger_image, challenger_name, challenger_version)
        image = both_versions_image(engine, image, challenger_image, challenger_version)
        environment |= {"CHALLENGER_DIR": CHALLENGER_MODEL_DIR, "ROUTE": route}
        described += f" with challenger {challenger_name} version {challenger_version} ({route})"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    container = engine.containers.run(
        image,
        detach=True,
        name=f"sentclf-serve-{name}-{version}-{uuid.uuid4().hex[:6]}",
        network_mode="host",
        environment=environment,
        volumes=volumes,
        labels={CONTAINER_LABEL: "1"} | checkout_labels(),
    )
    try:
        print(f"serving {described} from {image} (container {container.name})", flush=True)
        routes = f"/v2/health/ready, /v2/models/{served}/infer"
        print(f"  HTTP     http://127.0.0.1:{http_port}  ({routes})", flush=True)
        print(f"  gRPC     127.0.0.1:{grpc_port}", flush=True)
        print(f"  metrics  http://127.0.0.1:{metrics_port}/metrics", flush=True)
        if capture_dir:
            print(f"  capture  every answered request into {capture_dir.expanduser().resolve()}", flush=True)
        if feedback_dir:
            where = feedback_dir.expanduser().resolve()
            print(f"  feedback POST /v2/models/{served}/feedback appends labels into {where}", flush=True)
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
        if challenger_uri:
            remove_both_versions_image(engine, image)


def remove_both_versions_image(engine: docker.DockerClient, image: str) -> None:
    """The two-version image is this command's own (rebuilt in seconds from the two versions' images):
    removed on exit so that the versions' image garbage collection is not left one image per pair.
    Another `make serve` still running it keeps it (the engine refuses)."""
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        engine.images.remove(image, noprune=False)


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
    parser.add_argument("--feedback-dir", type=Path, help="turn the feedback endpoint on, writing here")
    parser.add_argument("--challenger", default="", help="a second version's model URI, served beside it")
    parser.add_argument("--route", default=SHADOW_ROUTE, help="with --challenger: shadow or split:<percent>")
    args = parser.parse_args(argv)
    try:
        return serve(
            args.model,
            args.http_port,
            args.grpc_port,
            args.metrics_port,
            capture_dir=args.capture_dir,
            challenger_uri=args.challenger or None,
            route=args.route,
            feedback_dir=args.feedback_dir,
        )
    except ServeError as exc:
        print(f"make serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
