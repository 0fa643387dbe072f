"""Dynamic batching: merge concurrent requests into one tokenize + ORT run in a single worker thread.

Policy (why): ORT on a CPU already uses every core for one batch, so one worker thread is enough and a
second concurrent run would only fight it for cores. Batches then form naturally: while the worker runs
batch N, new requests queue up and become batch N+1. So
  * worker idle and a lone request arrives -> run it at once (after one event-loop turn so that requests
    already decoded in the same turn join it); an idle server never sleeps MAX_BATCH_DELAY_MS for nothing;
  * requests queued while the worker was busy -> take them all (up to MAX_BATCH_SIZE sentences) and, if
    the batch is not full, wait until the oldest has been queued MAX_BATCH_DELAY_MS for more to join.
    Under load a request normally has already waited longer than that for the busy worker, so the delay
    only matters when batches are fast, which is exactly when merging more requests pays off.
Requests are never split across batches; one larger than MAX_BATCH_SIZE runs alone (the model chunks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

InferFn = Callable[[list[str]], np.ndarray]


class BatcherStopped(RuntimeError):
    """The batcher is shutting down and accepts no more work."""


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future
    enqueued: float = field(default=0.0)


def split_rows(rows: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Split a batch result back into per-request slices of the given sizes (in order)."""
    if sum(sizes) != len(rows):
        raise ValueError(f"sizes {list(sizes)} do not add up to {len(rows)} rows")
    offsets = np.cumsum(sizes)[:-1]
    return np.split(rows, offsets)


class DynamicBatcher:
    """Queue of requests served by one worker coroutine that runs infer_fn in an executor."""

    def __init__(
        self,
        infer_fn: InferFn,
        executor: Executor,
        max_batch_size: int = 32,
        max_delay_s: float = 0.002,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._infer_fn = infer_fn
        self._executor = executor
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._on_batch = on_batch
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: list[_Pending] = []  # the batch in the executor, failed too if we stop mid-run
        self._stopped = False

    def start(self) -> None:
        """Start the worker coroutine on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still queued fail with BatcherStopped."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in [*self._running, *self._pending]:
            if not item.future.done():
                item.future.set_exception(BatcherStopped("server is shutting down"))
        self._running, self._pending = [], deque()

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Queue texts and wait for their probabilities [len(texts), num_labels]."""
        if self._stopped:
            raise BatcherStopped("server is shutting down")
        loop = asyncio.get_running_loop()
        item = _Pending(texts, loop.create_future(), loop.time())
        self._pending.append(item)
        self._wakeup.set()
        return await item.future

    async def _wait_for_item(self, timeout: float | None) -> bool:
        """Wait until something is queued (or timeout); True if the queue is non-empty."""
        if self._pending:
            return True
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        return bool(self._pending)

    def _take_fitting(self, batch: list[_Pending], size: int) -> int:
        """Move queued requests into batch while they fit; drop ones whose caller already gave up."""
        while self._pending:
            head = self._pending[0]
            if head.future.done():  # cancelled by the client (deadline, disconnect): skip the work
                self._pending.popleft()
                continue
            if batch and size + len(head.texts) > self._max_batch_size:
                break
            batch.append(self._pending.popleft())
            size += len(head.texts)
        return size

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        busy = bool(self._pending)  # queued while the previous batch ran
        await self._wait_for_item(None)
        if not busy:
            await asyncio.sleep(0)  # let handlers already scheduled in this loop turn enqueue too
        batch: list[_Pending] = []
        size = self._take_fitting(batch, 0)
        if not busy or not batch:
            return batch
        deadline = batch[0].enqueued + self._max_delay_s
        while size < self._max_batch_size and not self._pending:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._wait_for_item(remaining):
                break
            before = size
            size = self._take_fitting(batch, size)
            if size == before:  # head does not fit: leave it for the next batch
                break
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            self._running = batch
            texts = [t for item in batch for t in item.texts]
            if self._on_batch is not None:
                self._on_batch(len(texts))
            try:
                rows = await loop.run_in_executor(self._executor, self._infer_fn, texts)
                parts = split_rows(rows, [len(item.texts) for item in batch])
            except Exception as exc:
                log.exception("inference failed for a batch of %d sentences", len(texts))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                self._running = []
                continue
            for item, part in zip(batch, parts, strict=True):
                if not item.future.done():
                    item.future.set_result(part)
            self._running = []
