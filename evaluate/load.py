"""Measuring the served model over gRPC with the standard KServe v2 client (tritonclient): its answers on
the test split, latency one request at a time, and throughput and latency across a list of concurrency
levels, with the server's memory sampled under that load. The load itself is the benches' own
(sentclf.loadgen), so the gate and the benches measure a server the same way.

Every failed request counts: an evaluation with errors is a partial one, and the step fails rather than
gate on it (ServerFailed names the container, which the caller logs with its log).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from docker.models.containers import Container
from tqdm.auto import tqdm
from tritonclient.utils import InferenceServerException

from sentclf import loadgen
from sentclf.kserve_client import classify, connect
from sentclf.metrics import percentile_ms
from sentclf.tracking import StepError

logger = logging.getLogger(__name__)

ACCURACY_BATCH = 32
MEMORY_SAMPLE_EVERY_S = 1.0
SETTLE_S = 3.0


class ServerFailed(StepError):
    """Requests failed: the server died, or answered errors, during the evaluation."""


@dataclass(frozen=True)
class Target:
    """Where and what to ask: the server's port, the served model's name and version."""

    port: int
    model: str
    version: str


def callers(target: Target) -> Callable[[], loadgen.Caller]:
    return loadgen.grpc_callers(target.port, target.model, target.version)


def describe(container: Container | None, settle_s: float = SETTLE_S) -> str:
    """The container's state, for a message: a killed server says so (status, exit code, OOM).

    The client sees the socket close the moment the server's process dies, a little before the engine
    records the container as exited: a container still `running` gets `settle_s` to show how it ended.
    """
    if container is None:
        return "the server is not a container of this step (a sidecar: see its own log)"
    deadline = time.monotonic() + settle_s
    while True:
        try:
            container.reload()
        except Exception:  # noqa: BLE001 (gone already: that is the description)
            return f"server container {container.name} is gone"
        state = container.attrs.get("State", {})
        if state.get("Status") != "running" or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return (
        f"server container {container.name} is {state.get('Status', '?')} "
        f"(exit code {state.get('ExitCode')}, OOM-killed {state.get('OOMKilled')})"
    )


def predict_all(
    target: Target, texts: list[str], container: Container | None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities for every text, in batched requests."""
    client = connect(target.port)
    labels, probabilities = [], []
    try:
        for start in tqdm(
            range(0, len(texts), ACCURACY_BATCH), desc="test split", unit="request", mininterval=5
        ):
            batch_labels, batch_probabilities = classify(
                client, target.model, texts[start : start + ACCURACY_BATCH], target.version
            )
            labels.append(batch_labels)
            probabilities.append(batch_probabilities)
    except InferenceServerException as error:
        raise ServerFailed(f"the test split could not be scored: {error}; {describe(container)}") from None
    finally:
        client.close()
    return np.concatenate(labels), np.concatenate(probabilities)


def latency_profile(
    target: Target, texts: list[str], container: Container
) -> tuple[dict[str, float], list[float]]:
    """One sentence per request, one request at a time (what a single caller waits), after one untimed
    request that sets up the channel: p50/p90/p99/max in ms, and every sample (seconds) for the
    histogram. The first failure ends it."""
    level = loadgen.run_level(
        callers(target), texts, concurrency=1, requests=len(texts), warm_up=1, stop_on_error=True
    )
    if level.errors:
        raise ServerFailed(f"latency could not be measured: {level.first_error}; {describe(container)}")
    latencies = level.latencies_s
    summary = {f"latency_p{p}_ms": percentile_ms(latencies, p) for p in (50, 90, 99)}
    summary["latency_max_ms"] = max(latencies) * 1000
    summary["latency_mean_ms"] = float(np.mean(latencies) * 1000)
    return summary, latencies


def load_sweep(
    target: Target, texts: list[str], levels: list[int], requests: int, container: Container | None
) -> tuple[list[dict[str, float]], float]:
    """Each concurrency level in turn (`concurrency` callers, each with its own channel, sending
    single-sentence requests until `requests` have been sent); returns the rows and the server's peak
    memory (MB) under load (NaN for a server that is not this step's container). Any failed request
    fails the evaluation: a partial measurement must not reach the gate."""
    measured, samples = loadgen.sweep(
        callers(target), texts, levels, requests, container, MEMORY_SAMPLE_EVERY_S
    )
    rows = [level.row() for level in measured]
    for row in rows:
        if row["errors"]:
            logger.warning(
                "concurrency %d: %d of %d requests failed, first: %s",
                row["concurrency"],
                row["errors"],
                requests,
                row["first_error"],
            )
    failed = [row for row in rows if row["errors"]]
    if failed:
        row = failed[0]
        raise ServerFailed(
            f"{row['errors']} of {requests} requests failed at concurrency {row['concurrency']} "
            f"({row['first_error']}); {describe(container)}"
        )
    peak = max((mb for _, mb in samples), default=float("nan")) if container is not None else float("nan")
    return rows, peak
