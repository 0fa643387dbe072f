"""Labels coming back: `POST /v2/models/{name}/feedback` appends the true labels of served requests to
`feedback-<UTC time>-<host>-<pid>-<n>.jsonl` in FEEDBACK_DIR, the same kind of file a labelling team drops in
a folder for the monitor (`mlflow run monitor -P feedback=<dir>`).

A body is one label or a list of them: `{"id": "<request id>", "index": 0, "label": "acceptable"}`, the
label by name or by index into the model's label set; `index` (the sentence's position in the request)
defaults to 0. A body with anything malformed, or a label outside the label set, is refused whole (400,
naming the item and the fix), nothing of it written. Ids are not checked here (the server keeps none): the
monitor counts unknown ids and duplicates. One line per label:
    {"id": "<request id>", "index": 0, "label": "acceptable", "model": "cola",
     "time": "2026-12-02T03:04:05.123456Z"}
with "label" always the class name. Written and flushed before the answer (200 `{"accepted": n}`), so an
answered label is on disk; the folder is bounded like the capture (FEEDBACK_MAX_MB, a file rotates at an
eighth of it, the oldest files deleted).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from .config import ConfigError

FILE_PREFIX = "feedback-"
FILE_SUFFIX = ".jsonl"
PARTS = 8
MAX_ITEMS = 10_000


class FeedbackError(ValueError):
    """A feedback body the server refuses (HTTP 400)."""


def parse_feedback(body: object, labels: Sequence[str]) -> list[tuple[str, int, str]]:
    """(id, index, label name) for each item of a feedback body; FeedbackError for anything malformed."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise FeedbackError('the feedback body is an empty list; send {"id", "index", "label"} or a list')
    if len(items) > MAX_ITEMS:
        raise FeedbackError(f"{len(items)} labels in one body; send at most {MAX_ITEMS} at a time")
    parsed = []
    for position, item in enumerate(items):
        where = f"feedback item {position}"
        if not isinstance(item, dict):
            raise FeedbackError(f'{where} must be an object {{"id", "index", "label"}}')
        unknown = sorted(set(item) - {"id", "index", "label"})
        if unknown:
            raise FeedbackError(f"{where} has unknown fields {unknown}; expected id, index, label")
        request_id, index, label = item.get("id"), item.get("index", 0), item.get("label")
        if not isinstance(request_id, str) or not request_id:
            raise FeedbackError(f"{where}: 'id' must be the request's id (a non-empty string)")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            message = "'index' must be the sentence's position in the request (an int >= 0)"
            raise FeedbackError(f"{where}: {message}")
        parsed.append((request_id, index, _label_name(label, labels, where)))
    return parsed


def _label_name(label: object, labels: Sequence[str], where: str) -> str:
    if isinstance(label, str) and label in labels:
        return label
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels):
        return labels[label]
    raise FeedbackError(
        f"{where}: label {label!r} is not in the model's label set {list(labels)} "
        f"(send a name, or an index from 0 to {len(labels) - 1})"
    )


def feedback_from_env(env: Mapping[str, str], model_name: str) -> FeedbackLog | None:
    """FEEDBACK_DIR's log (FEEDBACK_MAX_MB, default 100, bounds it), or None when FEEDBACK_DIR is unset."""
    directory = env.get("FEEDBACK_DIR", "").strip()
    if not directory:
        return None
    raw = env.get("FEEDBACK_MAX_MB", "").strip() or "100"
    try:
        max_mb = float(raw)
    except ValueError:
        max_mb = -1.0
    if max_mb <= 0:
        raise ConfigError(f"FEEDBACK_MAX_MB must be a number of megabytes > 0, got {raw!r}")
    return FeedbackLog(Path(directory), model_name, int(max_mb * 1024 * 1024))


class FeedbackLog:
    """The folder's feedback files: appended under a lock, rotated and pruned like the capture's."""

    def __init__(self, directory: Path, model_name: str, max_bytes: int) -> None:
        self.directory, self.model_name = directory, model_name
        self.max_bytes = max_bytes
        self._part_bytes = max(1, max_bytes // PARTS)
        self._tag = f"{socket.gethostname()}-{os.getpid()}"
        self._serial = 0
        self._file = None
        self._file_bytes = 0
        self._lock = threading.Lock()

    def append(self, items: list[tuple[str, int, str]]) -> None:
        """Write one line per label and flush; OSError when the folder cannot be written."""
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        model = self.model_name
        lines = [
            (
                json.dumps(
                    {"id": rid, "index": index, "label": label, "model": model, "time": when},
                    ensure_ascii=False,
                )
                + "\n"
            ).encode("utf-8", "surrogatepass")
            for rid, index, label in items
        ]
        data = b"".join(lines)
        with self._lock:
            try:
                if self._file is None or self._file_bytes + len(data) > self._part_bytes:
                    self._rotate(len(data))
                self._file.write(data)
                self._file.flush()
                self._file_bytes += len(data)
            except OSError:
                self._close()
                raise

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _rotate(self, need: int) -> None:
        self._close()
        files = sorted(self.directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"), key=lambda p: p.name)
        sizes = [path.stat().st_size if path.exists() else 0 for path in files]
        total = sum(sizes)
        for path, size in zip(files, sizes, strict=True):
            if total + need <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._serial += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.directory / f"{FILE_PREFIX}{stamp}-{self._tag}-{self._serial}{FILE_SUFFIX}"
        self._file = open(path, "ab")  # noqa: SIM115 (kept open across appends)
        self._file_bytes = 0
