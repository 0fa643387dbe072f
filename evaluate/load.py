"""Measuring the server over gRPC: accuracy on the test split, single-request latency, throughput."""

import logging
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from sentclf.kserve_client import classify, connect
from sentclf.metrics import percentile_ms

logger = logging.getLogger(__name__)

ACCURACY_BATCH = 32


def predict_all(port: int, model_name: str, texts: list[str], version: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities for every text, in batched requests."""
    client = connect(port)
    labels, probabilities = [], []
    for start in tqdm(range(0, len(texts), ACCURACY_BATCH), desc="test split", unit="request", mininterval=5):
        batch_labels, batch_probabilities = classify(
            client, model_name, texts[start : start + ACCURACY_BATCH], version
        )
        labels.append(batch_labels)
        probabilities.append(batch_probabilities)
    client.close()
    return np.concatenate(labels), np.concatenate(probabilities)


def measure_latency(port: int, model_name: str, texts: list[str], version: str) -> dict[str, float]:
    """One sentence per request, one request at a time: what a single caller waits."""
    client = connect(port)
    classify(client, model_name, texts[:1], version)  # warm the channel
    latencies = []
    for text in texts:
        started = time.perf_counter()
        classify(client, model_name, [text], version)
        latencies.append(time.perf_counter() - started)
    client.close()
    return {
        "latency_p50_ms": percentile_ms(latencies, 50),
        "latency_p99_ms": percentile_ms(latencies, 99),
        "latency_mean_ms": float(np.mean(latencies) * 1000),
    }


def measure_throughput(
    port: int, model_name: str, texts: list[str], version: str, concurrency: int, total_requests: int
) -> dict[str, float]:
    """`concurrency` callers, each with its own channel, send single-sentence requests until
    `total_requests` have been answered; failures are counted, not hidden."""
    counter = iter(range(total_requests))
    lock = threading.Lock()
    errors: list[str] = []
    latencies: list[float] = []

    def caller() -> None:
        client = connect(port)
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            started = time.perf_counter()
            try:
                classify(client, model_name, [texts[index % len(texts)]], version)
            except Exception as error:  # a failed request is a measured outcome, not a crash
                errors.append(str(error))
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
        logger.warning("%d of %d requests failed, first: %s", len(errors), total_requests, errors[0])
    return {
        "throughput_rps": len(latencies) / elapsed,
        f"latency_p99_ms_at_concurrency_{concurrency}": percentile_ms(latencies, 99) if latencies else 0.0,
        "throughput_errors": float(len(errors)),
    }
