"""A standalone Spark cluster on this machine: one master and `workers` workers, each a container of the
score image (so the same pyspark install, Java and Python environment as the score step's driver) on the
host network, bound to 127.0.0.1, started with `spark-class org.apache.spark.deploy.master.Master` and
`...deploy.worker.Worker`. For tests and benches: the score step is pointed at `master_url` and its
executors run on these workers. Every container is removed on leaving the block, whatever happens.
"""

import contextlib
import logging
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import docker.errors

from sentclf.containers import CONTAINER_LABEL, LOOPBACK, checkout_labels, free_port
from sentclf.engine import docker_client
from sentclf.images import score_image

logger = logging.getLogger(__name__)

SPARK_CLASS = "/opt/venv/lib/python3.11/site-packages/pyspark/bin/spark-class"
CLUSTER_LABEL = "sentclf.spark-cluster"


@dataclass(frozen=True)
class SparkCluster:
    master_url: str  # spark://127.0.0.1:<port>
    ui_url: str  # the master's web UI (JSON at /json/)
    workers: int
    cores_per_worker: int
    name: str


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout_s:.0f}s")


def alive_workers(ui_url: str) -> int:
    with urllib.request.urlopen(f"{ui_url}/json/", timeout=5) as answer:  # noqa: S310 (loopback)
        import json

        state = json.load(answer)
    return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


@contextlib.contextmanager
def standalone_cluster(
    workers: int = 2,
    cores_per_worker: int = 1,
    memory_per_worker: str = "1g",
    image: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 120,
    port: int = 0,
) -> Iterator[SparkCluster]:
    """Start the master (on `port`, 0: a free one) and the workers, wait until every worker is ALIVE,
    yield, remove them all."""
    engine = docker_client()
    image = image or score_image()  # this checkout's
    name = f"sentclf-spark-{uuid.uuid4().hex[:8]}"
    port, ui_port = port or free_port(), free_port()
    common = {
        "image": image,
        "detach": True,
        "network_mode": "host",
        "labels": {CONTAINER_LABEL: "spark", CLUSTER_LABEL: name} | checkout_labels(),
        "environment": {"SPARK_LOCAL_IP": LOOPBACK, "SPARK_NO_DAEMONIZE": "1", **(env or {})},
    }
    started = []
    try:
        started.append(
            engine.containers.run(
                command=[SPARK_CLASS, "org.apache.spark.deploy.master.Master", "--host", LOOPBACK,
                         "--port", str(port), "--webui-port", str(ui_port)],
                name=f"{name}-master",
                **common,
            )
        )  # fmt: skip
        _wait_for_port(port, timeout_s)
        master_url = f"spark://{LOOPBACK}:{port}"
        for index in range(workers):
            started.append(
                engine.containers.run(
                    command=[SPARK_CLASS, "org.apache.spark.deploy.worker.Worker", "--host", LOOPBACK,
                             "--cores", str(cores_per_worker), "--memory", memory_per_worker,
                             "--webui-port", str(free_port()), master_url],
                    name=f"{name}-worker-{index + 1}",
                    **common,
                )
            )  # fmt: skip
        ui_url = f"http://{LOOPBACK}:{ui_port}"
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError, ValueError):
                if alive_workers(ui_url) >= workers:
                    break
            if time.monotonic() > deadline:
                logs = "\n".join(c.logs(tail=20).decode(errors="replace") for c in started)
                raise TimeoutError(f"{workers} Spark workers did not register in {timeout_s:.0f}s:\n{logs}")
            time.sleep(0.5)
        logger.info("Spark master %s with %d workers (%s)", master_url, workers, name)
        yield SparkCluster(master_url, ui_url, workers, cores_per_worker, name)
    finally:
        for container in reversed(started):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)
