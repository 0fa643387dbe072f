"""Container helpers shared by the building and evaluate steps: start a server image, wait, clean up.

A step may run on the host network (under `main.py`) or on Docker's default network (`mlflow run
evaluate` as typed, where with the bridge off a container has loopback only). A server it starts joins
the step's own network namespace, so it is on the step's loopback either way.
"""

import contextlib
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import docker
import docker.errors
from docker.models.containers import Container
from mlflow.entities import Run

from sentclf.engine import containers_where, docker_client
from sentclf.images import CHECKOUT_LABEL, this_checkout

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Every container the pipeline starts carries this label, so tests can prove none is left behind.
CONTAINER_LABEL = "sentclf.managed"
# And these, so that a cancelled pipeline or step can find and remove what it started.
RUN_ID_LABEL = "sentclf.run-id"
PIPELINE_LABEL = "sentclf.pipeline-run-id"
# Docker bind-mounts these files from /var/lib/docker/containers/<id>/ into every container.
_OWN_CONTAINER = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf) ")


class ServerStartError(RuntimeError):
    """The server container exited or did not report SERVING in time."""


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on loopback that are free right now.

    Every probe stays bound until all are drawn: a port released at once may be
    handed out again by the next probe, and two listeners on one port fail.
    """
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((LOOPBACK, 0))
        return [probe.getsockname()[1] for probe in probes]


def own_container_id(mountinfo: str | None = None) -> str | None:
    """The id of the Docker container this process runs in, or None on a host."""
    if mountinfo is None:
        try:
            mountinfo = open("/proc/self/mountinfo").read()  # noqa: SIM115 (a one-shot read)
        except OSError:
            return None
    match = _OWN_CONTAINER.search(mountinfo)
    return match.group(1) if match else None


def server_network_mode() -> str:
    """Where a server this process starts must live to be on this process's loopback: in this
    container's network namespace, or on the host network when this process runs on the host."""
    container_id = own_container_id()
    return f"container:{container_id}" if container_id else "host"


def health_status(port: int, timeout_s: float = 1.0, service: str = "") -> str:
    """The gRPC health status name of the server on loopback:`port`; UNREACHABLE when nothing answers."""
    # Imported here: the conductor on the host imports this module for its labels, and its venv
    # (requirements/host.txt) has no gRPC; the steps that talk to servers run in the step image.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as error:
            unreachable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            return "UNREACHABLE" if error.code() in unreachable else "UNKNOWN"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_until_serving(container: Container, port: int, timeout_s: float) -> float:
    """Poll gRPC health until SERVING; returns seconds waited. Fails fast if the container exits."""
    started = time.monotonic()
    status = "UNREACHABLE"
    while time.monotonic() - started < timeout_s:
        container.reload()
        if container.status in ("exited", "dead"):
            raise ServerStartError(
                f"server container {container.name} exited during start-up; its log:\n{_tail_logs(container)}"
            )
        status = health_status(port, timeout_s=0.5)
        if status == "SERVING":
            return time.monotonic() - started
        time.sleep(0.05)
    log = _tail_logs(container)
    if status == "UNREACHABLE":
        says = " (its log says SERVING)" if "SERVING" in log else ""
        raise ServerStartError(
            f"server container {container.name} is running{says} but cannot be reached at "
            f"{LOOPBACK}:{port} from this process (network {container.attrs['HostConfig']['NetworkMode']}, "
            f"this process in {server_network_mode()}): a network problem, not the model. Its log:\n{log}"
        )
    raise ServerStartError(
        f"server container {container.name} answers health {status}, not SERVING, after {timeout_s:.0f}s; "
        f"its log:\n{log}"
    )


def _tail_logs(container: Container, lines: int = 40) -> str:
    with contextlib.suppress(docker.errors.DockerException):
        return container.logs(tail=lines).decode(errors="replace")
    return "(log unavailable)"


def checkout_labels() -> dict[str, str]:
    """The checkout label of a container or image this code starts or builds (in a step: the checkout its
    step image was built for), so that each clone's leftover checks count only its own."""
    return {CHECKOUT_LABEL: this_checkout()}


def run_labels(run: Run | None) -> dict[str, str]:
    """Labels that tie a container to the step run that starts it and to that run's pipeline, so that a
    cancelled pipeline can find it even if the step could not remove it."""
    if run is None:
        return {}
    labels = {RUN_ID_LABEL: run.info.run_id}
    if parent := run.data.tags.get("mlflow.parentRunId"):
        labels[PIPELINE_LABEL] = parent
    return labels


def remove_labelled(label: str, value: str) -> list[str]:
    """Force-remove every container carrying `label=value`; returns their names."""
    removed = []
    for container in containers_where(label=f"{label}={value}"):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
            removed.append(container.name)
    return removed


@contextlib.contextmanager
def running_server(
    image: str,
    env: dict[str, str] | None = None,
    start_timeout_s: float = 60.0,
    name_prefix: str = "sentclf",
    labels: dict[str, str] | None = None,
    keep_log: Callable[[str], None] | None = None,
    volumes: dict[str, dict[str, str]] | None = None,
) -> Iterator[tuple[Container, int, float]]:
    """Start `image` in this process's network (see server_network_mode) with a free gRPC port, wait for
    SERVING, and always remove it; `keep_log` receives its whole log first, on every path. `volumes`
    (docker's host path -> {"bind": ..., "mode": ...}) lets a bench swap a file of the image for another.

    Yields (container, grpc_port, seconds from start to SERVING).
    """
    client = docker_client()
    grpc_port, metrics_port, http_port = free_ports(3)
    environment = {
        "GRPC_PORT": str(grpc_port),
        "METRICS_PORT": str(metrics_port),
        "HTTP_PORT": str(http_port),  # images built before the HTTP listener ignore it
        **(env or {}),
    }
    name = f"{name_prefix}-{uuid.uuid4().hex[:8]}"
    container = None
    try:
        container = client.containers.run(
            image,
            detach=True,
            name=name,
            network_mode=server_network_mode(),
            environment=environment,
            labels={CONTAINER_LABEL: "1", **checkout_labels(), **(labels or {})},
            volumes=volumes or {},
        )
        logger.info("started %s from %s (gRPC port %d)", name, image, grpc_port)
        seconds_to_serving = wait_until_serving(container, grpc_port, start_timeout_s)
        logger.info("%s SERVING after %.2fs", name, seconds_to_serving)
        yield container, grpc_port, seconds_to_serving
    finally:
        if container is not None:
            try:
                if keep_log is not None:
                    keep_log(_whole_log(container))
            except Exception:  # the container goes in any case; the error that brought us here stays
                logger.exception("the log of %s could not be kept", name)
            finally:
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
                    logger.info("removed container %s", name)


def _whole_log(container: Container) -> str:
    try:
        return container.logs().decode(errors="replace")
    except docker.errors.DockerException as error:
        return f"(the log of {container.name} is unavailable: {error})"


def container_memory_mb(container: Container) -> float:
    """Anonymous (heap) memory of the container's cgroup; page cache is left out, it is reclaimable."""
    stats = container.stats(stream=False)["memory_stats"]
    detail = stats.get("stats", {})
    if "anon" in detail:  # cgroup v2
        return detail["anon"] / 2**20
    return (stats.get("usage", 0) - detail.get("total_inactive_file", detail.get("inactive_file", 0))) / 2**20


class MemorySampler(threading.Thread):
    """Samples a container's memory until stopped: (seconds since start, MB) pairs. A container that has
    gone away ends the sampling; the samples so far stay."""

    def __init__(self, container: Container, every_s: float) -> None:
        super().__init__(daemon=True)
        self.container, self.every_s = container, every_s
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()
        self._began = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.samples.append((time.monotonic() - self._began, container_memory_mb(self.container)))
            except (docker.errors.DockerException, KeyError):
                return
            self._stop_event.wait(self.every_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
