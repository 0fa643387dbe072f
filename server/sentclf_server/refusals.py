"""One log line per refused or failed request, rate-limited, without a traceback for bad input.

A caller that sends the same bad request in a loop must not fill the log (or slow the server writing it):
lines beyond a small burst are counted and the count is added to the next line that gets through. The
refusals themselves are always counted in the metrics (sentclf_inference_request_failure_total).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sentclf_server.refusals")


class RateLimitedLog:
    """A token bucket in front of a logger: `burst` lines at once, then `per_second` lines a second."""

    def __init__(
        self,
        logger: logging.Logger = log,
        per_second: float = 5.0,
        burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger, self._rate, self._burst, self._clock = logger, per_second, float(burst), clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._suppressed = 0
        self._lock = threading.Lock()

    def log(self, level: int, message: str, *args: object, exc_info: bool = False) -> bool:
        """Log `message % args` unless over the rate (then count it); True if it was written."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1.0:
                self._suppressed += 1
                return False
            self._tokens -= 1.0
            suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            message += " (%d more lines like this suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True


class RateLimitFilter(logging.Filter):
    """A logging filter with its own bucket, for another library's refusal lines (uvicorn's "Invalid HTTP
    request received." for a garbage request line): the lines beyond the rate are dropped."""

    def __init__(self, per_second: float = 5.0, burst: int = 20, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._rate, self._burst, self._clock = per_second, float(burst), clock
        self._tokens, self._stamp = float(burst), clock()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


REFUSALS = RateLimitedLog()


def log_refusal(protocol: str, endpoint: str, code: str, message: str) -> None:
    """The log line of one refused or failed request: a warning for a server fault, info for bad input."""
    level = logging.WARNING if code in ("INTERNAL", "UNKNOWN") else logging.INFO
    REFUSALS.log(level, "%s %s refused with %s: %s", protocol, endpoint, code, message[:300])
