"""Container helpers shared by the building and evaluate steps: start a server image, wait, clean up."""

import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import grpc
from docker.models.containers import Container
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sentclf.engine import docker_client

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Every container the pipeline starts carries this label, so tests can prove none is left behind.
CONTAINER_LABEL = "sentclf.managed"


class ServerStartError(RuntimeError):
    """The server container exited or did not report SERVING in time."""


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def health_status(port: int, timeout_s: float = 1.0, service: str = "") -> str:
    """The gRPC health status name of the server on loopback:`port` (UNKNOWN when it does not answer)."""
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return "UNKNOWN"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_until_serving(container: Container, port: int, timeout_s: float) -> float:
    """Poll gRPC health until SERVING; returns seconds waited. Fails fast if the container exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        container.reload()
        if container.status in ("exited", "dead"):
            raise ServerStartError(
                f"server container {container.name} exited during start-up; its log:\n{_tail_logs(container)}"
            )
        if health_status(port, timeout_s=0.5) == "SERVING":
            return time.monotonic() - started
        time.sleep(0.05)
    raise ServerStartError(
        f"server container {container.name} not SERVING after {timeout_s:.0f}s; its log:\n"
        f"{_tail_logs(container)}"
    )


def _tail_logs(container: Container, lines: int = 40) -> str:
    with contextlib.suppress(docker.errors.DockerException):
        return container.logs(tail=lines).decode(errors="replace")
    return "(log unavailable)"


@contextlib.contextmanager
def running_server(
    image: str, env: dict[str, str] | None = None, start_timeout_s: float = 60.0, name_prefix: str = "sentclf"
) -> Iterator[tuple[Container, int, float]]:
    """Start `image` on the host network with a free gRPC port, wait for SERVING, and always remove it.

    Yields (container, grpc_port, seconds from start to SERVING).
    """
    client = docker_client()
    grpc_port, metrics_port = free_port(), free_port()
    environment = {"GRPC_PORT": str(grpc_port), "METRICS_PORT": str(metrics_port), **(env or {})}
    name = f"{name_prefix}-{uuid.uuid4().hex[:8]}"
    container = None
    try:
        container = client.containers.run(
            image,
            detach=True,
            name=name,
            network_mode="host",
            environment=environment,
            labels={CONTAINER_LABEL: "1"},
        )
        logger.info("started %s from %s (gRPC port %d)", name, image, grpc_port)
        seconds_to_serving = wait_until_serving(container, grpc_port, start_timeout_s)
        logger.info("%s SERVING after %.2fs", name, seconds_to_serving)
        yield container, grpc_port, seconds_to_serving
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                logger.info("removed container %s", name)
