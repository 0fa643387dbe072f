"""Measuring the served model over gRPC with the standard KServe v2 client (tritonclient): its answers on
the test split, latency one request at a time, and throughput and latency across a list of concurrency
levels, with the server's memory sampled under that load.

Every failed request counts: an evaluation with errors is a partial one, and the step fails rather than
gate on it (ServerFailed names the container, which the caller logs with its log).
"""

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from docker.models.containers import Container
from tqdm.auto import tqdm
from tritonclient.utils import InferenceServerException

from sentclf.containers import MemorySampler
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
    """One sentence per request, one request at a time (what a single caller waits): p50/p90/p99/max in
    ms, and every sample (seconds) for the histogram."""
    client = connect(target.port)
    try:
        classify(client, target.model, texts[:1], target.version)  # warm the channel
        latencies = []
        for text in texts:
            started = time.perf_counter()
            classify(client, target.model, [text], target.version)
            latencies.append(time.perf_counter() - started)
    except InferenceServerException as error:
        raise ServerFailed(f"latency could not be measured: {error}; {describe(container)}") from None
    finally:
        client.close()
    summary = {f"latency_p{p}_ms": percentile_ms(latencies, p) for p in (50, 90, 99)}
    summary["latency_max_ms"] = max(latencies) * 1000
    summary["latency_mean_ms"] = float(np.mean(latencies) * 1000)
    return summary, latencies


def load_level(target: Target, texts: list[str], concurrency: int, requests: int) -> dict[str, float]:
    """`concurrency` callers, each with its own channel, send single-sentence requests until `requests`
    have been sent; failures are counted, not hidden."""
    counter = iter(range(requests))
    lock = threading.Lock()
    errors: list[str] = []
    latencies: list[float] = []

    def caller() -> None:
        client = connect(target.port)
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            started = time.perf_counter()
            try:
                classify(client, target.model, [texts[index % len(texts)]], target.version)
            except Exception as error:  # a failed request is a measured outcome, not a crash
                errors.append(str(error).splitlines()[0])
                continue
            latencies.append(time.perf_counter() - started)
        client.close()

    threads = [threading.Thread(target=caller) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        logger.warning(
            "concurrency %d: %d of %d requests failed, first: %s",
            concurrency,
            len(errors),
            requests,
            errors[0],
        )
    return {
        "concurrency": concurrency,
        "throughput_rps": len(latencies) / elapsed,
        "p50_ms": percentile_ms(latencies, 50) if latencies else float("nan"),
        "p99_ms": percentile_ms(latencies, 99) if latencies else float("nan"),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def load_sweep(
    target: Target, texts: list[str], levels: list[int], requests: int, container: Container | None
) -> tuple[list[dict[str, float]], float]:
    """Each concurrency level in turn; returns the rows and the server's peak memory (MB) under load
    (NaN for a server that is not this step's container). Any failed request fails the evaluation: a
    partial measurement must not reach the gate."""
    sampler = MemorySampler(container, MEMORY_SAMPLE_EVERY_S) if container is not None else None
    if sampler:
        sampler.start()
    try:
        rows = [load_level(target, texts, level, requests) for level in levels]
    finally:
        if sampler:
            sampler.stop()
    failed = [row for row in rows if row["errors"]]
    if failed:
        row = failed[0]
        raise ServerFailed(
            f"{row['errors']} of {requests} requests failed at concurrency {row['concurrency']} "
            f"({row['first_error']}); {describe(container)}"
        )
    peak = max((mb for _, mb in sampler.samples), default=float("nan")) if sampler else float("nan")
    return rows, peak
