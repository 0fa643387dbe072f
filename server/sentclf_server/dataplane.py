"""The data plane both protocol shells share: the served versions (a champion and, optionally, a
challenger, each with its model and batcher), the route between them, the request limits and the metrics.

The gRPC servicer (service.py) and the HTTP handler (http_server.py) only translate their protocol into
calls of this module and its answers (and InferenceError's code) back into theirs; what a request may cost,
which model and version it may name, which version answers it (versions.py) and what is measured about it
is decided here once, for both.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from sentclf_runtime.outputs import TEXT_INPUT
from sentclf_runtime.pairs import PairError, check_pairs, joined_texts

from . import SERVER_NAME, __version__
from .batcher import BatcherStopped, DynamicBatcher, RequestCancelled
from .capture import Capture
from .config import Settings
from .feedback import FeedbackLog
from .limits import LimitExceeded, RequestLimits
from .metrics import ModelMetrics, count_routed
from .outputs import served_metadata
from .pair_inputs import input_names
from .refusals import log_refusal
from .shadow import SHADOW_MAX_IN_FLIGHT, ShadowScorer
from .versions import ROUTE_CHALLENGER, ROUTE_CHAMPION, ROUTE_DIRECT, ROUTE_SHADOW, Route, Versions

INPUT_NAME = TEXT_INPUT  # the runtime's name, shared with the clients
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
    version: str | None = None  # the version that answered (its metrics); None: the champion's


@dataclass
class Answer:
    """An answered request: its probabilities, the version that answered, how it was chosen, its id."""

    probs: np.ndarray
    version: str
    route: str
    id: str


@dataclass
class ServedVersion:
    """One version's settings, metrics and (once loaded) batcher."""

    settings: Settings
    metrics: ModelMetrics
    batcher: DynamicBatcher | None = None

    @property
    def version(self) -> str:
        return self.settings.model_version


@dataclass
class DataPlane:
    """The process's serving state: filled in as the server starts (batcher) and drains (draining)."""

    settings: Settings  # the champion's (and the server's) settings
    batcher: DynamicBatcher | None = None  # the champion's
    capture: Capture | None = None  # CAPTURE_DIR: answered requests go to it after their answer
    draining: bool = False
    loaded_at: float = field(default=0.0)
    versions: Versions | None = None  # None: the champion alone
    shadow: ShadowScorer | None = None  # ROUTE=shadow: the challenger's off-path scoring
    feedback: FeedbackLog | None = None  # FEEDBACK_DIR: labels posted to the feedback endpoint

    def __post_init__(self) -> None:
        s = self.settings
        self.limits = RequestLimits.for_model(s.max_seq_length, s.max_message_bytes, s.max_request_batch)
        self.metrics = ModelMetrics(s.model_name, s.model_version)
        if self.versions is None:
            self.versions = Versions(s, None, Route("single"))
        self.route = self.versions.route
        self.active = 0  # inference requests inside the server now (shadow work waits for a quiet moment)
        self._active_lock = threading.Lock()
        self.champion = ServedVersion(s, self.metrics)
        challenger = self.versions.challenger
        self.challenger = (
            None
            if challenger is None
            else ServedVersion(challenger, ModelMetrics(challenger.model_name, challenger.model_version))
        )

    @property
    def served(self) -> list[ServedVersion]:
        return [self.champion] + ([self.challenger] if self.challenger is not None else [])

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.draining and all(v.batcher for v in self.served[1:])

    def find_version(self, version: str) -> ServedVersion | None:
        return next((v for v in self.served if v.version == version), None)

    def check_model(self, name: str, version: str | None) -> None:
        settings = self.settings
        if name != settings.model_name:
            message = f"unknown model '{name}'; this server serves '{settings.model_name}'"
            raise InferenceError("NOT_FOUND", message)
        if version and self.find_version(version) is None:
            serving = ", ".join(f"'{v.version}'" for v in self.served)
            raise InferenceError("NOT_FOUND", f"model '{name}' has no version '{version}'; serving {serving}")

    def choose(self, version: str | None, routing_key: str) -> tuple[ServedVersion, str]:
        """The version that answers a request, and the route that chose it (versions.py)."""
        if version:
            found = self.find_version(version)
            if found is None:
                self.check_model(self.settings.model_name, version)  # raises NOT_FOUND
            return found, ROUTE_DIRECT
        if self.challenger is not None and self.route.answers_from_challenger(routing_key):
            return self.challenger, ROUTE_CHALLENGER
        return self.champion, ROUTE_CHAMPION

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
            "versions": [v.version for v in self.served],
            "platform": PLATFORM,
            "inputs": [
                {"name": name, "datatype": "BYTES", "shape": [-1]}
                for name in input_names(settings.pair_input)
            ],
            "outputs": [
                {"name": name, "datatype": datatype, "shape": shape}
                for name, datatype, shape in served_metadata(settings.serving)
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
        self.metrics.in_flight.inc()  # the deployment's: on the champion's series
        with self._active_lock:
            self.active += 1
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
            self.metrics.in_flight.dec()
            with self._active_lock:
                self.active -= 1
            answered = self.find_version(outcome.version) if outcome.version else None
            metrics = (answered or self.champion).metrics
            metrics.observe_request(protocol, outcome.code, time.perf_counter() - began)
            if outcome.code != "OK":
                log_refusal(protocol, "infer", outcome.code, outcome.message)

    def infer(
        self,
        texts: list[str],
        on_cancel: Callable[[Callable[[], None]], bool] | None = None,
        version: str | None = None,
        request_id: str | None = None,
        routing_key: str | None = None,
        outcome: RequestOutcome | None = None,
        text_pairs: list[str] | None = None,
    ) -> Answer:
        """Score validated sentences (each first cut to what the model reads) with the version the route
        chooses (or the one named); its answer, version, route and the request's id (generated when the
        caller sent none). In shadow mode a copy goes to the challenger after the answer. A sentence-pair
        model takes `text_pairs`, one per text (sentclf_runtime.pairs); each pair goes to the batcher as
        one (text, text_pair) item."""
        try:
            check_pairs(self.settings.serving, texts, text_pairs, INPUT_NAME)
        except PairError as exc:
            raise InferenceError("INVALID_ARGUMENT", str(exc)) from None
        request_id = request_id or uuid.uuid4().hex
        target, route = self.choose(version, routing_key or request_id)
        if outcome is not None:
            outcome.version = target.version
        batcher = target.batcher
        # Still served while draining: a client that has not yet seen NOT_SERVING should not fail.
        if batcher is None:
            raise InferenceError("UNAVAILABLE", "model is still loading; retry when SERVING")
        if not texts:  # shape [0]: empty outputs, nothing for the batcher
            empty = np.zeros((0, len(self.settings.labels)), dtype=np.float32)
            return Answer(empty, target.version, route, request_id)
        sent = texts
        texts = self.limits.cut(texts, target.metrics.truncated.inc)
        check_text(texts)  # what the tokenizer will read
        if text_pairs is not None:
            pairs = self.limits.cut(text_pairs, target.metrics.truncated.inc)
            check_text(pairs, self.settings.pair_input)
            texts = list(zip(texts, pairs, strict=True))
            sent = joined_texts(sent, text_pairs)  # the capture keeps a pair as one text
        try:
            probs, queue_s, compute_s = batcher.submit_timed(texts, on_cancel)
        except BatcherStopped as exc:
            raise InferenceError("UNAVAILABLE", str(exc)) from None
        except RequestCancelled as exc:
            raise InferenceError("CANCELLED", str(exc)) from None
        target.metrics.queue.observe(queue_s)
        target.metrics.compute.observe(compute_s)
        count_routed(self.settings.model_name, target.version, route)
        if self.capture is not None:
            self.capture.offer(sent, probs, request_id, target.version, True, route)  # a queue put
        if self.shadow is not None and route == ROUTE_CHAMPION:
            self.shadow.offer(texts, (request_id, sent))  # a queue put: the challenger scores it later
        return Answer(probs, target.version, route, request_id)

    def busy(self) -> bool:
        """More inference requests inside the server than shadow work may run beside (shadow.py)."""
        return self.active > SHADOW_MAX_IN_FLIGHT

    def shadow_scored(self, texts: list[str], probs: np.ndarray, tag: object) -> None:
        """The challenger's shadow answer to a request (in the shadow thread): captured, never returned."""
        request_id, sent = tag
        challenger = self.challenger
        count_routed(self.settings.model_name, challenger.version, ROUTE_SHADOW)
        if self.capture is not None and self.capture.sampled(request_id):
            self.capture.offer(sent, probs, request_id, challenger.version, False, ROUTE_SHADOW)


def check_text(texts: list[str], name: str = INPUT_NAME) -> None:
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
                f"input '{name}' element {index} is not valid Unicode text ({exc.reason} at character "
                f"{exc.start}); send UTF-8 text without lone surrogates",
            ) from None
