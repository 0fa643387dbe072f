"""Traffic capture, opt-in (CAPTURE_DIR) and bounded, off the request path.

The data plane hands `offer()` a request's sentences and probabilities after the answer is computed; the
request thread only draws the sample and puts one tuple in a bounded queue (put_nowait: a full queue drops
the request and counts it, it never waits). One writer thread does the rest: the features (characters,
tokens, words and out-of-vocabulary words: the runtime's `text_features`, with its own copy of the
tokenizer), the text or its sha256, the JSON line, and the files: `capture-<UTC
time>-<host>-<pid>-<n>.jsonl` in CAPTURE_DIR, a new one every CAPTURE_MAX_MB / PARTS, the folder's oldest
capture files deleted so that they stay within CAPTURE_MAX_MB. A folder that cannot be written (missing,
read-only, full) is a warning in the log (at most one a minute) and the errors counter, never an error to
the caller.

One record (a line) per sentence:
    {"time": "2026-12-02T03:04:05.123456Z", "model": "cola", "version": "3", "id": "<request id>",
     "index": 0, "served": true, "route": "champion", "label": 1, "label_name": "acceptable",
     "probabilities": [0.12, 0.88], "chars": 24, "tokens": 7, "words": 6, "oov_words": 0,
     "truncated": false, "text": "The cat sat on the mat."}
with CAPTURE_TEXT=false, "sha256": "<hex of the UTF-8 text>" instead of "text". "id" is the request's id
(the caller's OIP `id`, else the one the server generated and returned), "index" the sentence's position in
the request, "version" the version that produced this record, "served" whether this answer was returned to
the caller (false for the challenger's shadow answer), "route" how the version was chosen: "champion",
"challenger" (split), "shadow" or "direct" (the request named the version).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sentclf_runtime.features import text_features

log = logging.getLogger(__name__)

FILE_PREFIX = "capture-"
FILE_SUFFIX = ".jsonl"
# A file is rotated at CAPTURE_MAX_MB / PARTS, so deleting the oldest frees at most that share.
PARTS = 8
QUEUE_REQUESTS = 4096
WARN_EVERY_S = 60.0
_STOP = object()


@dataclass(frozen=True)
class CaptureSettings:
    directory: Path
    sample: float = 1.0
    max_bytes: int = 100 * 1024 * 1024
    store_text: bool = True


class CaptureCounters:
    """captured / dropped / errors, as Prometheus counters (metrics.py) or plain numbers in tests."""

    def __init__(self, captured=None, dropped=None, errors=None) -> None:
        self.captured = captured or _Count()
        self.dropped = dropped or _Count()
        self.errors = errors or _Count()


class _Count:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class Capture:
    """The queue and its writer thread; `offer()` is all the request path calls."""

    def __init__(
        self,
        settings: CaptureSettings,
        model_name: str,
        model_version: str,
        labels: Sequence[str],
        tokenizer_path: Path,
        max_chars: int,
        counters: CaptureCounters | None = None,
        queue_requests: int = QUEUE_REQUESTS,
        clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        self.settings = settings
        self.model_name, self.model_version, self.labels = model_name, model_version, tuple(labels)
        self.tokenizer_path = tokenizer_path
        self.max_chars = max_chars
        self.counters = counters or CaptureCounters()
        self.clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=queue_requests)
        self._part_bytes = max(1, settings.max_bytes // PARTS)
        self._tag = f"{socket.gethostname()}-{os.getpid()}"
        self._serial = 0
        self._file = None
        self._file_path: Path | None = None
        self._file_bytes = 0
        self._last_warning = -WARN_EVERY_S
        self._thread = threading.Thread(target=self._loop, name="capture-writer", daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start the writer (for a Capture made with start=False)."""
        self._thread.start()

    # -- request path ---------------------------------------------------------------------------------

    def offer(
        self,
        texts: Sequence[str],
        probabilities: np.ndarray,
        request_id: str = "",
        version: str | None = None,
        served: bool = True,
        route: str = "champion",
    ) -> None:
        """Queue an answered request for capture (sampled: a shadow answer follows its request's draw, see
        sampled()); never blocks, never raises."""
        if served and not self.sampled(request_id):
            return
        meta = (request_id, version or self.model_version, served, route)
        try:
            self._queue.put_nowait((self.clock(), texts, probabilities, meta))
        except queue.Full:
            self.counters.dropped.inc(len(texts))

    def sampled(self, request_id: str) -> bool:
        """Whether a request is captured: drawn from its id, so a request's shadow answer is captured
        exactly when its served answer is (both or neither)."""
        sample = self.settings.sample
        if sample >= 1.0:
            return True
        if not request_id:
            return random.random() < sample
        return (zlib.crc32(request_id.encode("utf-8", "surrogatepass")) % 10_000) < sample * 10_000

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (within timeout_s), then close the current file."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout_s)

    # -- writer thread --------------------------------------------------------------------------------

    def _loop(self) -> None:
        tokenizer = None
        try:
            tokenizer = _load_tokenizer(self.tokenizer_path)
        except Exception as exc:  # features without token counts rather than no capture at all
            self._warn(f"capture: cannot load {self.tokenizer_path} ({exc}); token counts are left out")
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            try:
                lines = self._records(tokenizer, *item)
            except Exception as exc:
                self.counters.errors.inc(len(item[1]))
                self._warn(f"capture: cannot encode a record ({exc!r})")
                continue
            self._write(lines)
            if self._queue.empty():
                self._flush()
        self._close_file()

    def _records(
        self,
        tokenizer,
        stamp: float,
        texts: Sequence[str],
        probabilities: np.ndarray,
        meta: tuple[str, str, bool, str] = ("", "", True, "champion"),
    ) -> list[bytes]:
        cut = [text[: self.max_chars] for text in texts]
        features = text_features(tokenizer, cut) if tokenizer is not None else [None] * len(cut)
        when = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        request_id, version, served, route = meta
        lines = []
        for index, (text, short, row, feature) in enumerate(
            zip(texts, cut, probabilities, features, strict=True)
        ):
            label = int(np.argmax(row))
            record = {
                "time": when,
                "model": self.model_name,
                "version": version or self.model_version,
                "id": request_id,
                "index": index,
                "served": served,
                "route": route,
                "label": label,
                "label_name": self.labels[label] if label < len(self.labels) else str(label),
                "probabilities": [round(float(p), 6) for p in row],
                "chars": len(text),
            }
            if feature is not None:
                record |= {"tokens": feature[0], "words": feature[1], "oov_words": feature[2]}
            record["truncated"] = len(text) > len(short)
            if self.settings.store_text:
                record["text"] = short
            else:
                record["sha256"] = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
            lines.append((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))
        return lines

    def _write(self, lines: list[bytes]) -> None:
        written = 0
        try:
            for line in lines:
                if len(line) > self._part_bytes:
                    self.counters.errors.inc()
                    continue
                if self._file is None or self._file_bytes + len(line) > self._part_bytes:
                    self._rotate(len(line))
                self._file.write(line)
                self._file_bytes += len(line)
                written += 1
        except OSError as exc:
            self.counters.errors.inc(len(lines) - written)
            self._warn(f"capture: cannot write to {self.settings.directory} ({exc}); records are dropped")
            self._close_file()
        self.counters.captured.inc(written)

    def _rotate(self, need: int) -> None:
        self._close_file()
        directory = self.settings.directory
        # room for a whole new part: the file opened here grows up to _part_bytes before it rotates
        self._prune(directory, self.settings.max_bytes - max(need, self._part_bytes))
        self._serial += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = directory / f"{FILE_PREFIX}{stamp}-{self._tag}-{self._serial}{FILE_SUFFIX}"
        self._file = open(path, "ab", buffering=64 * 1024)  # noqa: SIM115 (kept open across records)
        self._file_path, self._file_bytes = path, 0

    def _prune(self, directory: Path, budget: int) -> None:
        """Delete the folder's oldest capture files (names start with their UTC time) until the rest leave
        `budget` bytes: the bound holds across restarts and for servers sharing the folder."""
        files = sorted(directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"), key=lambda p: p.name)
        sizes = []
        for path in files:
            try:
                sizes.append(path.stat().st_size)
            except FileNotFoundError:
                sizes.append(0)
        total = sum(sizes)
        for path, size in zip(files, sizes, strict=True):
            if total <= budget:
                break
            path.unlink(missing_ok=True)
            total -= size

    def _flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            self.counters.errors.inc()
            self._warn(f"capture: cannot write to {self.settings.directory} ({exc})")
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(message)


def _load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
