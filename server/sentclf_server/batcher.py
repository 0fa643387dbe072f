"""Dynamic batching in the gRPC handler threads: concurrent requests are merged into one model call, run
by one of the waiting handler threads (leader/follower), so no request crosses to another thread and back.

Policy (why):
  * Requests queue in arrival order. A handler thread whose request is at the head of the queue, while
    fewer than MAX_CONCURRENT_BATCHES batches run, becomes the leader: it takes queued requests (up to
    MAX_BATCH_SIZE sentences, never splitting one), runs the model for all of them in its own thread, hands
    every follower its rows and wakes it, then answers its own RPC. Every request in a batch, the leader's
    own included, finishes at the same moment; no thread is ever handed a batch it is not part of.
  * Idle server (no batch running, nothing queued): the request runs at once in its own thread, without
    queueing, so a lone request never waits MAX_BATCH_DELAY_MS for nothing; requests arriving meanwhile
    queue behind it.
  * Busy server (another batch running): the leader waits until the oldest queued request has been
    queued MAX_BATCH_DELAY_MS or the batch is full, so that the second concurrent batch is not a trickle of
    single sentences.
  * ORT already spreads one batch over the cores; a second concurrent batch fills the cores in the gaps
    of the first (operators that do not parallelise, tokenisation, the gRPC work around them), which
    measured +7-10% sentences/s on 2 cores; MAX_CONCURRENT_BATCHES=1 runs one batch at a time.
A request larger than MAX_BATCH_SIZE runs alone (the model cuts it into buckets of at most that size).

Each request succeeds or fails alone: when a batch of several requests fails, the leader runs each of them
again alone, so only the request whose input breaks the model fails (with its own error) and its batch-mates
are answered. The data plane validates every request's text before it joins the queue, so this is the
fallback for what validation cannot foresee; it costs one extra model call per member of a failed batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .refusals import RateLimitedLog

log = logging.getLogger(__name__)
# A poisoned request resent in a loop must not flood the log: a few tracebacks, then counts.
_FAILURES = RateLimitedLog(log, per_second=1.0, burst=5)

InferFn = Callable[[list[str]], np.ndarray]


class BatcherStopped(RuntimeError):
    """The batcher is shutting down and accepts no more work."""


class RequestCancelled(RuntimeError):
    """The caller went away (deadline, disconnect) before its request ran."""


@dataclass(eq=False)
class _Pending:
    texts: list[str]
    enqueued: float
    wake: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False
    started: float = 0.0  # when its batch started (batcher clock)
    compute_s: float = 0.0  # how long that batch ran


class DynamicBatcher:
    """Thread-safe batcher: submit() blocks its calling thread until the request's rows are ready."""

    def __init__(
        self,
        infer_fn: InferFn,
        max_batch_size: int = 32,
        max_delay_s: float = 0.002,
        max_concurrent: int = 1,
        on_batch: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._infer_fn = infer_fn
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._max_concurrent = max_concurrent
        self._on_batch = on_batch
        self._clock = clock
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a leader waiting for more requests listens here
        self._queue: deque[_Pending] = deque()
        self._running = 0
        self._stopped = False

    def submit(
        self, texts: list[str], on_cancel: Callable[[Callable[[], None]], bool] | None = None
    ) -> np.ndarray:
        """Queue texts and return their probabilities [len(texts), num_labels] once a batch ran them.

        on_cancel, if given, registers a callback that fires when the caller gives up (grpc's
        ServicerContext.add_callback); a request cancelled before it runs is dropped from the queue and
        raises RequestCancelled here. Raises BatcherStopped once stop() was called."""
        return self.submit_timed(texts, on_cancel)[0]

    def submit_timed(
        self, texts: list[str], on_cancel: Callable[[Callable[[], None]], bool] | None = None
    ) -> tuple[np.ndarray, float, float]:
        """submit(), plus the request's queue time (until its batch started) and its batch's run time."""
        with self._lock:
            if self._stopped:
                raise BatcherStopped("server is shutting down")
            idle = self._running == 0 and not self._queue
            if idle:  # fast path: nothing to merge with, so no queue, no follower bookkeeping
                self._running += 1
            else:
                item = _Pending(texts, self._clock())
                self._queue.append(item)
                self._arrived.notify_all()
        if idle:
            began = self._clock()
            result = self._run_alone(texts)
            return result, 0.0, self._clock() - began
        if on_cancel is not None and not on_cancel(lambda: self._cancel(item)):
            self._cancel(item)  # the RPC had already ended
        while True:
            with self._lock:
                if item.done:
                    break
                batch = self._lead(item)
                if batch is None:
                    item.wake.clear()
            if batch is None:
                item.wake.wait()
            else:
                self._run(batch)
        if item.error is not None:
            raise item.error
        return item.result, max(0.0, item.started - item.enqueued), item.compute_s

    def stop(self) -> None:
        """Refuse new requests and fail the queued ones with BatcherStopped; running batches finish."""
        with self._lock:
            self._stopped = True
            for item in self._queue:
                self._finish(item, error=BatcherStopped("server is shutting down"))
            self._queue.clear()

    # -- under the lock -------------------------------------------------------------------------------

    def _finish(
        self, item: _Pending, result: np.ndarray | None = None, error: BaseException | None = None
    ) -> None:
        if not item.done:
            item.result, item.error, item.done = result, error, True
            item.wake.set()

    def _cancel(self, item: _Pending) -> None:
        with self._lock:
            if item.done or item not in self._queue:
                return  # answered already, or running: its rows are simply not used
            self._queue.remove(item)
            self._finish(item, error=RequestCancelled("the caller went away"))
            self._wake_head()

    def _wake_head(self) -> None:
        """Let the thread at the head of the queue lead, if a batch slot is free."""
        if self._queue and self._running < self._max_concurrent:
            self._queue[0].wake.set()

    def _take_fitting(self, batch: list[_Pending], size: int) -> int:
        while self._queue:
            head = self._queue[0]
            if batch and size + len(head.texts) > self._max_batch_size:
                break
            batch.append(self._queue.popleft())
            size += len(head.texts)
        return size

    def _lead(self, item: _Pending) -> list[_Pending] | None:
        """If `item` heads the queue and a batch slot is free, take a batch starting with it."""
        if not self._queue or self._queue[0] is not item or self._running >= self._max_concurrent:
            return None
        busy = self._running > 0
        self._running += 1
        batch: list[_Pending] = []
        size = self._take_fitting(batch, 0)
        if busy:
            deadline = item.enqueued + self._max_delay_s
            while size < self._max_batch_size and not self._queue:
                remaining = deadline - self._clock()
                if remaining <= 0 or self._stopped:
                    break
                self._arrived.wait(remaining)
                size = self._take_fitting(batch, size)
        self._wake_head()  # with two slots, the next head may lead a batch of its own at once
        return batch

    # -- in the leader's thread, outside the lock -------------------------------------------------------

    def _run_alone(self, texts: list[str]) -> np.ndarray:
        """The idle server's request: run it at once in the caller's thread."""
        if self._on_batch is not None:
            self._on_batch(len(texts))
        try:
            return self._infer_fn(texts)
        except Exception:
            _FAILURES.log(
                logging.ERROR, "inference failed for a request of %d sentences", len(texts), exc_info=True
            )
            raise
        finally:
            with self._lock:
                self._running -= 1
                self._wake_head()

    def _run(self, batch: list[_Pending]) -> None:
        texts = [text for item in batch for text in item.texts]
        if self._on_batch is not None:
            self._on_batch(len(texts))
        started = self._clock()
        try:
            rows = self._infer_fn(texts)
            parts = split_rows(rows, [len(item.texts) for item in batch])
        except Exception as exc:
            outcome = self._one_by_one(batch, exc)
        else:
            outcome = [(part, None) for part in parts]
        compute_s = self._clock() - started
        with self._lock:
            self._running -= 1
            for item, (part, error) in zip(batch, outcome, strict=True):
                item.started, item.compute_s = started, compute_s
                self._finish(item, part, error)
            self._wake_head()

    def _one_by_one(
        self, batch: list[_Pending], exc: Exception
    ) -> list[tuple[np.ndarray | None, BaseException | None]]:
        """A failed batch's members, each run again alone: only the ones that fail alone fail."""
        if len(batch) == 1:
            _FAILURES.log(
                logging.ERROR,
                "inference failed for a request of %d sentences",
                len(batch[0].texts),
                exc_info=True,
            )
            return [(None, exc)]
        _FAILURES.log(
            logging.WARNING, "a batch of %d requests failed (%r); running each alone", len(batch), exc
        )
        outcome: list[tuple[np.ndarray | None, BaseException | None]] = []
        for item in batch:
            try:
                outcome.append((self._infer_fn(item.texts), None))
            except Exception as alone:
                _FAILURES.log(
                    logging.ERROR,
                    "inference failed for a request of %d sentences",
                    len(item.texts),
                    exc_info=True,
                )
                outcome.append((None, alone))
        return outcome


def split_rows(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Split a batch result back into per-request slices (views) of the given sizes, in order."""
    if sum(sizes) != len(rows):
        raise ValueError(f"sizes {list(sizes)} do not add up to {len(rows)} rows")
    parts, start = [], 0
    for size in sizes:
        parts.append(rows[start : start + size])
        start += size
    return parts
