"""One pipeline at a time per checkout.

A nightly retrain and a `make run` typed during it would otherwise write the same SQLite store at once
(`database is locked`) and race for the `challenger` and `champion` aliases. The conductor takes this
lock: a manual run waits for the running one (saying so), a scheduled retrain started by
scripts/retrain.sh gives up at once (exit 75, EX_TEMPFAIL) because the next night comes anyway.
scripts/retrain.sh takes the same lock with flock(1) around its whole run (set-up included) and tells the
conductor it already holds it.
"""

import contextlib
import datetime
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

# Set by scripts/retrain.sh, which holds the lock around the conductor it starts.
HELD_ENV = "SENTCLF_PIPELINE_LOCK_HELD"
WAIT_MESSAGE_EVERY_S = 60.0


class PipelineBusy(RuntimeError):
    """Another pipeline holds the lock and this one was told not to wait."""


def lock_path(project_dir: Path) -> Path:
    return project_dir / ".build" / "pipeline.lock"


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip() or "unknown"
    return "unknown"


@contextlib.contextmanager
def pipeline_lock(project_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold the checkout's pipeline lock for the block; wait for it, or raise PipelineBusy."""
    path = lock_path(project_dir)
    if os.environ.get(HELD_ENV) == str(path):
        yield  # our parent (scripts/retrain.sh) holds it for us
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise PipelineBusy(f"another pipeline holds {path} ({_holder(path)})") from None
            _wait(handle, path)
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        handle.write(f"pid {os.getpid()}, started {started}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait(handle, path: Path) -> None:
    """Block until the lock is free, saying every minute who holds it (a signal still interrupts)."""
    waited = 0.0
    logger.info("another pipeline holds %s (%s): waiting for it to finish", path, _holder(path))
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            logger.info("pipeline lock acquired after %.0fs", waited)
            return
        except BlockingIOError:
            time.sleep(1.0)
            waited += 1.0
            if waited % WAIT_MESSAGE_EVERY_S == 0:
                logger.info("still waiting for %s (%s), %.0fs so far", path, _holder(path), waited)
