"""Shadow scoring: the challenger scores a copy of every champion-answered request, off the request path.

The request thread only puts (texts, request id) in a bounded queue (put_nowait: a full queue drops the
copy and counts it, the caller never waits). One worker thread takes what is queued every POLL_S (20 ms),
scores it with the challenger (MAX_BATCH_SIZE sentences per run) and hands the answers to the capture
(served=false).
Why it does not slow callers:
  * the worker scores only while the server is not busy: when more than SHADOW_MAX_IN_FLIGHT requests are
    inside the server at the moment it would start a run, what it holds is dropped (and counted), and so
    is every copy that finds the queue full; shadow work runs in the gaps between callers' requests;
  * the challenger's ONNX Runtime session computes in that one thread (intra-op threads 1), so a shadow
    run takes one core at most, never the ORT pool the champion's batches use;
  * the queue is short (SHADOW_QUEUE requests), so what is dropped is dropped at once, not after waiting.
Not a low CPU priority for the thread: measured, a nice-19 thread that holds Python's GIL when the kernel
preempts it stalls every other thread of the process (16 callers: 0.59x the throughput of one version).
Counted per version in sentclf_shadow_requests_total{outcome=done|dropped|failed}.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from .refusals import RateLimitedLog

log = logging.getLogger(__name__)
_FAILURES = RateLimitedLog(log, per_second=0.2, burst=3)
SHADOW_QUEUE = 256
POLL_S = 0.02
# Shadow runs start only while at most this many inference requests are inside the server: none, so a run
# starts in a gap between callers (one arriving meanwhile waits for that run only, a millisecond or so).
SHADOW_MAX_IN_FLIGHT = 0


class ShadowScorer:
    """The queue and its low-priority worker thread; `offer()` is all the request path calls."""

    def __init__(
        self,
        predict: Callable[[list[str]], np.ndarray],
        on_scored: Callable[[Sequence[str], np.ndarray, object], None],
        counters: dict[str, object],
        max_batch_size: int = 32,
        queue_requests: int = SHADOW_QUEUE,
        observe_seconds: Callable[[float], None] | None = None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._predict, self._on_scored, self._counters = predict, on_scored, counters
        self._busy = busy
        self._max_batch_size = max_batch_size
        self._observe = observe_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=queue_requests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shadow", daemon=True)
        self._thread.start()

    def offer(self, texts: Sequence[str], tag: object) -> None:
        """Queue a copy of an answered request for the challenger; never blocks, never raises."""
        try:
            self._queue.put_nowait((texts, tag))
        except queue.Full:
            self._counters["dropped"].inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Score what is queued (within timeout_s), then stop."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        # Polled, not woken per copy: a wake-up per request put the shadow thread in the callers' way for
        # Python's GIL (measured: one caller's p50 0.75 -> 3.7 ms); every POLL_S it takes all that queued.
        while not self._stop.wait(POLL_S):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        batch: list[tuple[Sequence[str], object]] = []
        size = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if batch and size + len(item[0]) > self._max_batch_size:
                self._score(batch)
                batch, size = [], 0
            batch.append(item)
            size += len(item[0])
        if batch:
            self._score(batch)

    def _score(self, batch: list[tuple[Sequence[str], object]]) -> None:
        if self._busy():  # callers need the cores: drop, do not queue up
            self._counters["dropped"].inc(len(batch))
            return
        texts = [text for item_texts, _ in batch for text in item_texts]
        began = time.perf_counter()
        try:
            probs = self._predict(texts)
        except Exception:
            _FAILURES.log(logging.WARNING, "shadow scoring failed for %d requests", len(batch), exc_info=True)
            self._counters["failed"].inc(len(batch))
            return
        if self._observe is not None:
            self._observe(time.perf_counter() - began)
        start = 0
        for item_texts, tag in batch:
            self._on_scored(item_texts, probs[start : start + len(item_texts)], tag)
            start += len(item_texts)
        self._counters["done"].inc(len(batch))
