"""Prometheus metrics (exposed on METRICS_PORT by http_server.metrics_app: `/metrics`, 404 elsewhere).

Names follow Prometheus conventions (base units: seconds; counters end in `_total`) and carry the model's
name and version, like Triton's `nv_inference_*` and KServe's metrics; the server README maps one to the
other. Inference requests are counted by protocol (`grpc`, `http`) and by final status, named with gRPC's
code names for both protocols (OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, ...); every request of
every endpoint, including those refused before any handler runs (a message over the size limit, an RPC or
path this server does not have), is counted in `sentclf_requests_total`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

if TYPE_CHECKING:
    from .capture import CaptureCounters
    from .model import BatchStats

# The *_created timestamp series double the scrape size and no dashboard here uses them.
disable_created_metrics()

_MODEL = ["model", "version"]
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "sentclf_requests",  # sentclf_requests_total
    "Every request of every endpoint by protocol, endpoint (RPC or HTTP route) and final status "
    "(gRPC code names); refusals before any handler runs included.",
    ["protocol", "endpoint", "code"],
)
INFER_SUCCESS = Counter(
    "sentclf_inference_request_success",
    "Inference requests answered with outputs.",
    [*_MODEL, "protocol"],
)
INFER_FAILURE = Counter(
    "sentclf_inference_request_failure",
    "Inference requests refused or failed, by status (gRPC code names for both protocols).",
    [*_MODEL, "protocol", "code"],
)
REQUEST_DURATION = Histogram(
    "sentclf_inference_request_duration_seconds",
    "Inference request time inside the server, from the handler's entry to its answer.",
    [*_MODEL, "protocol"],
    buckets=_SECONDS,
)
QUEUE_DURATION = Histogram(
    "sentclf_inference_queue_duration_seconds",
    "Time a request waited for its batch to start (0 when it ran at once on an idle server).",
    _MODEL,
    buckets=(0.0, *_SECONDS),
)
COMPUTE_DURATION = Histogram(
    "sentclf_inference_compute_duration_seconds",
    "Time of the model run (tokenise, ORT, softmax) that answered a request.",
    _MODEL,
    buckets=_SECONDS,
)
IN_FLIGHT = Gauge(
    "sentclf_inference_requests_in_flight",
    "Inference requests inside the server now (parsing, queued or running).",
    _MODEL,
)
BATCH_SIZE = Histogram(
    "sentclf_inference_batch_size",
    "Sentences per model run, after dynamic batching.",
    _MODEL,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
TRUNCATED = Counter(
    "sentclf_inference_truncated_sentences",
    "Sentences cut to the model's character budget before tokenisation (longer than the model reads).",
    _MODEL,
)
CAPTURE_RECORDS = Counter(
    "sentclf_capture_records",
    "Sentences of answered requests by what traffic capture (CAPTURE_DIR) did with them: captured (written), "
    "dropped (the writer's queue was full) or error (the folder could not be written, a record not encoded).",
    [*_MODEL, "outcome"],
)

ROUTED = Counter(
    "sentclf_routed_requests",
    "Inference requests answered by each version, by route: champion, challenger (split), direct (the "
    "request named the version) or shadow (the challenger's off-path copy of a champion-answered request).",
    [*_MODEL, "route"],
)
SHADOW = Counter(
    "sentclf_shadow_requests",
    "Shadow copies of champion-answered requests for the challenger, by outcome: done (scored), dropped (the "
    "shadow queue was full: the machine was busy with callers) or failed.",
    [*_MODEL, "outcome"],
)
SHADOW_DURATION = Histogram(
    "sentclf_shadow_compute_duration_seconds",
    "Time of one shadow scoring run of the challenger (several queued requests at once).",
    _MODEL,
    buckets=_SECONDS,
)

FEEDBACK = Counter(
    "sentclf_feedback_labels",
    "Labels of served requests accepted by the feedback endpoint and written to FEEDBACK_DIR.",
    ["model"],
)

MODEL_RUNS = Counter("sentclf_model_runs", "ORT calls (a batch runs as one call per length bucket).")
MODEL_TOKENS = Counter(
    "sentclf_model_tokens",
    "Token positions the model computed: kind=sentence (real tokens) or kind=padding.",
    ["kind"],
)
MODEL_SECONDS = Counter(
    "sentclf_model_seconds",
    "Wall time of the batches' stages: stage=tokenize, or stage=model (padding, ORT, softmax).",
    ["stage"],
)
_SENTENCE_TOKENS, _PADDING_TOKENS = MODEL_TOKENS.labels(kind="sentence"), MODEL_TOKENS.labels(kind="padding")
_TOKENIZE_SECONDS, _MODEL_SECONDS = (
    MODEL_SECONDS.labels(stage="tokenize"),
    MODEL_SECONDS.labels(stage="model"),
)


class ModelMetrics:
    """The inference metrics of one served model (name, version), children bound once."""

    def __init__(self, model: str, version: str) -> None:
        self.model, self.version = model, version
        self.in_flight = IN_FLIGHT.labels(model, version)
        self.queue = QUEUE_DURATION.labels(model, version)
        self.compute = COMPUTE_DURATION.labels(model, version)
        self.batch = BATCH_SIZE.labels(model, version)
        self.truncated = TRUNCATED.labels(model, version)
        self.feedback = FEEDBACK.labels(model)
        self._success = {p: INFER_SUCCESS.labels(model, version, p) for p in ("grpc", "http")}
        self._duration = {p: REQUEST_DURATION.labels(model, version, p) for p in ("grpc", "http")}
        # Pre-create the usual series so dashboards see zeros, not gaps.
        for protocol in ("grpc", "http"):
            for code in ("INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL"):
                INFER_FAILURE.labels(model, version, protocol, code)

    def capture_counters(self) -> CaptureCounters:
        """The capture's captured / dropped / errors counters of this model."""
        from .capture import CaptureCounters

        return CaptureCounters(
            *(CAPTURE_RECORDS.labels(self.model, self.version, o) for o in ("captured", "dropped", "error"))
        )

    def observe_request(self, protocol: str, code: str, seconds: float) -> None:
        """One finished inference request: its status and its time in the server."""
        if code == "OK":
            self._success[protocol].inc()
        else:
            INFER_FAILURE.labels(self.model, self.version, protocol, code).inc()
        self._duration[protocol].observe(seconds)

    def observe_refusal(self, protocol: str, code: str) -> None:
        """An inference request refused before it could be read (too large, cut off): no duration."""
        INFER_FAILURE.labels(self.model, self.version, protocol, code).inc()

    def observe_batch(self, size: int) -> None:
        """Record the size of one model run."""
        self.batch.observe(size)


def count_routed(model: str, version: str, route: str) -> None:
    """One answered request (or shadow copy) of a version, by the route that chose it."""
    ROUTED.labels(model, version, route).inc()


def shadow_counters(model: str, version: str) -> dict[str, Counter]:
    """The challenger's shadow done / dropped / failed counters (zeros shown from the start)."""
    return {outcome: SHADOW.labels(model, version, outcome) for outcome in ("done", "dropped", "failed")}


def count_request(protocol: str, endpoint: str, code: str) -> None:
    """One request of any endpoint, with its final status (gRPC code name)."""
    REQUESTS.labels(protocol, endpoint, code).inc()


def observe_model(stats: BatchStats) -> None:
    """Record what one batch cost the model (SentenceClassifier's observer)."""
    MODEL_RUNS.inc(stats.runs)
    _SENTENCE_TOKENS.inc(stats.tokens)
    _PADDING_TOKENS.inc(stats.padded_tokens - stats.tokens)
    _TOKENIZE_SECONDS.inc(stats.tokenize_s)
    _MODEL_SECONDS.inc(stats.model_s)
