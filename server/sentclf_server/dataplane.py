"""The data plane both protocol shells share: one model, one batcher, the request limits and the metrics.

The gRPC servicer (service.py) and the HTTP handler (http_server.py) only translate their protocol into
calls of this module and its answers (and InferenceError's code) back into theirs; what a request may cost,
which model it may name and what is measured about it is decided here once, for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from . import SERVER_NAME, __version__
from .batcher import BatcherStopped, DynamicBatcher, RequestCancelled
from .capture import Capture
from .config import Settings
from .limits import LimitExceeded, RequestLimits
from .metrics import ModelMetrics
from .outputs import output_metadata
from .refusals import log_refusal

INPUT_NAME = "text"
PLATFORM = "onnxruntime_onnx"

# gRPC code name -> HTTP status, for the HTTP shell (the protocol's error JSON carries the message).
HTTP_STATUS = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}


class InferenceError(Exception):
    """A request the data plane refuses or cannot answer; `code` is a gRPC status code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RequestOutcome:
    """What the shells report back about a request while it is inside DataPlane.track()."""

    code: str = "OK"
    message: str = ""  # what the caller was told, for the refusal's log line


@dataclass
class DataPlane:
    """The process's serving state: filled in as the server starts (batcher) and drains (draining)."""

    settings: Settings
    batcher: DynamicBatcher | None = None
    capture: Capture | None = None  # CAPTURE_DIR: answered requests go to it after their answer
    draining: bool = False
    loaded_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        s = self.settings
        self.limits = RequestLimits.for_model(s.max_seq_length, s.max_message_bytes, s.max_request_batch)
        self.metrics = ModelMetrics(s.model_name, s.model_version)

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.draining

    def check_model(self, name: str, version: str | None) -> None:
        settings = self.settings
        if name != settings.model_name:
            message = f"unknown model '{name}'; this server serves '{settings.model_name}'"
            raise InferenceError("NOT_FOUND", message)
        if version and version != settings.model_version:
            raise InferenceError(
                "NOT_FOUND",
                f"model '{name}' has no version '{version}'; serving version '{settings.model_version}'",
            )

    def model_ready(self, name: str, version: str | None) -> bool:
        """Like Triton: an unknown model is simply not ready."""
        try:
            self.check_model(name, version)
        except InferenceError:
            return False
        return self.ready

    def server_metadata(self, extensions: list[str]) -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": extensions}

    def model_metadata(self) -> dict:
        settings = self.settings
        return {
            "name": settings.model_name,
            "versions": [settings.model_version],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": name, "datatype": datatype, "shape": shape}
                for name, datatype, shape in output_metadata(len(settings.labels))
            ],
        }

    def check_count(self, count: int) -> None:
        try:
            self.limits.check_count(count, INPUT_NAME)
        except LimitExceeded as exc:
            raise InferenceError("INVALID_ARGUMENT", str(exc)) from None

    def check_size(self, size: int) -> None:
        try:
            self.limits.check_body(size)
        except LimitExceeded as exc:
            raise InferenceError("RESOURCE_EXHAUSTED", str(exc)) from None

    @contextmanager
    def track(self, protocol: str) -> Iterator[RequestOutcome]:
        """Around one inference request: in flight while inside; its status and duration counted after,
        and a refusal's one (rate-limited) log line."""
        outcome = RequestOutcome()
        metrics = self.metrics
        metrics.in_flight.inc()
        began = time.perf_counter()
        try:
            yield outcome
        except InferenceError as err:
            outcome.code, outcome.message = err.code, err.message
            raise
        except Exception as exc:
            if outcome.code == "OK":
                outcome.code, outcome.message = "INTERNAL", repr(exc)
            raise
        finally:
            metrics.in_flight.dec()
            metrics.observe_request(protocol, outcome.code, time.perf_counter() - began)
            if outcome.code != "OK":
                log_refusal(protocol, "infer", outcome.code, outcome.message)

    def infer(
        self, texts: list[str], on_cancel: Callable[[Callable[[], None]], bool] | None = None
    ) -> np.ndarray:
        """Probabilities [len(texts), N] for validated sentences, each first cut to what the model reads."""
        batcher = self.batcher
        # Still served while draining: a client that has not yet seen NOT_SERVING should not fail.
        if batcher is None:
            raise InferenceError("UNAVAILABLE", "model is still loading; retry when SERVING")
        if not texts:  # shape [0]: empty outputs, nothing for the batcher
            return np.zeros((0, len(self.settings.labels)), dtype=np.float32)
        sent = texts
        texts = self.limits.cut(texts, self.metrics.truncated.inc)
        check_text(texts)  # what the tokenizer will read
        try:
            probs, queue_s, compute_s = batcher.submit_timed(texts, on_cancel)
        except BatcherStopped as exc:
            raise InferenceError("UNAVAILABLE", str(exc)) from None
        except RequestCancelled as exc:
            raise InferenceError("CANCELLED", str(exc)) from None
        self.metrics.queue.observe(queue_s)
        self.metrics.compute.observe(compute_s)
        if self.capture is not None:
            self.capture.offer(sent, probs)  # a queue put: the writer thread does the rest
        return probs


def check_text(texts: list[str]) -> None:
    """Refuse a request whose text the tokenizer cannot take (a lone surrogate such as JSON's "\\ud800",
    which has no UTF-8 form) before it joins a batch, where it would fail its batch-mates too."""
    for index, text in enumerate(texts):
        if text.isascii():  # O(1) for a str: CPython keeps the flag
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InferenceError(
                "INVALID_ARGUMENT",
                f"input '{INPUT_NAME}' element {index} is not valid Unicode text ({exc.reason} at character "
                f"{exc.start}); send UTF-8 text without lone surrogates",
            ) from None
