"""Prometheus metrics, served over HTTP on METRICS_PORT by prometheus_client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram, disable_created_metrics, start_http_server

if TYPE_CHECKING:
    from .model import BatchStats

# The *_created timestamp series double the scrape size and no dashboard here uses them.
disable_created_metrics()

REQUESTS = Counter(
    "sentclf_requests",  # exported as sentclf_requests_total
    "ModelInfer requests by final gRPC status code.",
    ["code"],
)
LATENCY = Histogram(
    "sentclf_request_latency_seconds",
    "ModelInfer latency inside the server, from handler entry to response.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_SIZE = Histogram(
    "sentclf_batch_size",
    "Sentences per model run, after dynamic batching.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
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


_REQUESTS_OK = REQUESTS.labels(code="OK")


def observe_request(code_name: str, seconds: float) -> None:
    """Record one finished ModelInfer call."""
    (_REQUESTS_OK if code_name == "OK" else REQUESTS.labels(code=code_name)).inc()
    LATENCY.observe(seconds)


def observe_batch(size: int) -> None:
    """Record the size of one model run."""
    BATCH_SIZE.observe(size)


def observe_model(stats: BatchStats) -> None:
    """Record what one batch cost the model (SentenceClassifier's observer)."""
    MODEL_RUNS.inc(stats.runs)
    _SENTENCE_TOKENS.inc(stats.tokens)
    _PADDING_TOKENS.inc(stats.padded_tokens - stats.tokens)
    _TOKENIZE_SECONDS.inc(stats.tokenize_s)
    _MODEL_SECONDS.inc(stats.model_s)


def start_metrics_server(address: str, port: int) -> None:
    """Serve /metrics from a daemon thread (prometheus_client's own HTTP server)."""
    start_http_server(port, addr=address)
