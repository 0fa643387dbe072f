"""Shadow scoring: the challenger scores a copy of every champion-answered request, off the request path.

The request thread only puts (texts, request id) in a bounded queue (put_nowait: a full queue drops the
copy and counts it, the caller never waits). One worker thread takes what is queued (up to MAX_BATCH_SIZE
sentences at a time), scores it with the challenger and hands the answers to the capture (served=false).
Why it never slows callers:
  * the worker runs at the lowest CPU priority (nice 19 for its thread; Linux schedules threads alone), and
    the challenger's ONNX Runtime session uses only the calling thread (intra-op threads 1), so all of its
    compute is in that low-priority thread: when the champion's callers keep the cores busy, the worker
    gets what is left, its queue fills and further copies are dropped;
  * the queue is short (SHADOW_QUEUE requests), so what is dropped is dropped at once, not after waiting.
Counted per version in sentclf_shadow_requests_total{outcome=done|dropped|failed}.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from .refusals import RateLimitedLog

log = logging.getLogger(__name__)
_FAILURES = RateLimitedLog(log, per_second=0.2, burst=3)
_STOP = object()
SHADOW_QUEUE = 64


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
    ) -> None:
        self._predict, self._on_scored, self._counters = predict, on_scored, counters
        self._max_batch_size = max_batch_size
        self._observe = observe_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=queue_requests)
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
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # lowest priority for this thread only (Linux)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            size = len(item[0])
            while size < self._max_batch_size:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._score(batch)
                    return
                batch.append(more)
                size += len(more[0])
            self._score(batch)

    def _score(self, batch: list[tuple[Sequence[str], object]]) -> None:
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
