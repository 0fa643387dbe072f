"""The one load generator: closed-loop callers over gRPC (tritonclient) or HTTP/JSON, used by the
evaluate step and by the benches, so that a figure the gate reads and a figure a bench prints are measured
the same way.

`run_level` runs `concurrency` callers, each with its own client connected before the clock starts; each
sends single-sentence requests back to back (sentences[offset:], cycling) until `requests` have been
issued or the time limit has passed. It returns a `Level`: every successful request's latency, the
failed requests (counted, never hidden: a failed request is a measured outcome, not a crash), the wall
time, and the CPU this process (the client side, all its threads) used meanwhile. `sweep` runs several
levels in turn with the server container's memory sampled under that load.

A caller is anything with `__call__(text)` and `close()`: `GrpcCaller` talks to a KServe v2 server over
gRPC, `HttpCaller` to one over the protocol's HTTP/JSON (any server of the protocol: ours, KServe's,
MLServer's), a test injects a fake.
"""

import http.client
import json
import math
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from docker.models.containers import Container

from sentclf.containers import LOOPBACK, MemorySampler
from sentclf.kserve_client import (
    LABEL_OUTPUT,
    PROBABILITIES_OUTPUT,
    TEXT_INPUT,
    build_inputs,
    connect,
    requested_outputs,
)
from sentclf.metrics import percentile_ms

# A request that takes longer than this is a failed one (a hung server must not hang the caller).
REQUEST_TIMEOUT_S = 30.0


class Caller(Protocol):
    """Sends one single-sentence request and waits for its answer; raises if it fails."""

    def __call__(self, text: str) -> None: ...

    def close(self) -> None: ...


class GrpcCaller:
    """One tritonclient gRPC client (its own channel) asking `model` (at `version`, "" for the server's
    choice) for the label and probabilities of one sentence per request."""

    def __init__(self, port: int, model: str, version: str = "") -> None:
        self.client = connect(port)
        self.model, self.version = model, version

    def __call__(self, text: str) -> None:
        self.client.infer(
            self.model,
            build_inputs([text]),
            model_version=self.version,
            outputs=requested_outputs(),
            client_timeout=REQUEST_TIMEOUT_S,
        )

    def close(self) -> None:
        self.client.close()


def grpc_callers(port: int, model: str, version: str = "") -> Callable[[], Caller]:
    """A factory of callers to the server at `port`: one per concurrent caller."""
    return lambda: GrpcCaller(port, model, version)


class HttpCaller:
    """One keep-alive HTTP/1.1 connection (the standard library's http.client) posting the protocol's
    JSON infer request for one sentence, label and probabilities asked for as JSON tensors (no binary
    extension, so any server of the protocol answers it the same way). An answer that is not 200 with
    a `label` output raises."""

    def __init__(self, port: int, model: str, version: str = "", host: str = LOOPBACK) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
        self.connection.connect()  # now, before the clock starts, as a gRPC channel is
        versioned = f"/versions/{version}" if version else ""
        self.path = f"/v2/models/{model}{versioned}/infer"
        self.outputs = [{"name": LABEL_OUTPUT}, {"name": PROBABILITIES_OUTPUT}]

    def __call__(self, text: str) -> None:
        self.infer(text)

    def labels(self, text: str) -> list[int]:
        """The `label` output's data for one sentence (to check a server's answers, not timed)."""
        outputs = {o.get("name"): o for o in self.infer(text).get("outputs", ())}
        return [int(label) for label in outputs[LABEL_OUTPUT]["data"]]

    def infer(self, text: str) -> dict:
        """The decoded answer to one sentence."""
        body = json.dumps(
            {
                "inputs": [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [1], "data": [text]}],
                "outputs": self.outputs,
            }
        ).encode()
        try:
            self.connection.request(
                "POST", self.path, body, {"Content-Type": "application/json", "Connection": "keep-alive"}
            )
            response = self.connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()  # the next request opens a new connection
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {answer[:200].decode(errors='replace')}")
        decoded = json.loads(answer)
        if not any(o.get("name") == LABEL_OUTPUT for o in decoded.get("outputs", ())):
            raise RuntimeError(f"no {LABEL_OUTPUT} output in {answer[:200]!r}")
        return decoded

    def close(self) -> None:
        self.connection.close()


def http_callers(port: int, model: str, version: str = "") -> Callable[[], Caller]:
    """A factory of HTTP callers to the server's HTTP port: one connection per concurrent caller."""
    return lambda: HttpCaller(port, model, version)


@dataclass
class Level:
    """What one concurrency level measured (or several rounds of it, folded together with `add`)."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    wall_s: float = 0.0
    client_cpu_s: float = 0.0  # CPU this process (the callers' threads) used while the level ran

    @property
    def throughput(self) -> float:
        """Successful requests per second of wall time."""
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0

    @property
    def client_cpu_us_per_request(self) -> float:
        return 1e6 * self.client_cpu_s / len(self.latencies_s) if self.latencies_s else float("nan")

    def percentile_ms(self, percentile: float) -> float:
        return percentile_ms(self.latencies_s, percentile) if self.latencies_s else float("nan")

    def add(self, other: "Level") -> None:
        """Fold in another round at the same concurrency (throughput = all successes / all wall time)."""
        self.latencies_s.extend(other.latencies_s)
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.wall_s += other.wall_s
        self.client_cpu_s += other.client_cpu_s

    def row(self) -> dict[str, float]:
        """The level as the evaluate step logs and reports it."""
        return {
            "concurrency": self.concurrency,
            "throughput_rps": self.throughput,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "errors": self.errors,
            "first_error": self.first_error,
        }


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used: the load's client side, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_level(
    new_caller: Callable[[], Caller],
    texts: Sequence[str],
    concurrency: int,
    requests: int,
    time_limit_s: float = math.inf,
    offset: int = 0,
    warm_up: int = 0,
    stop_on_error: bool = False,
) -> Level:
    """`requests` single-sentence requests (texts[offset:], cycling) from `concurrency` callers, each
    with its own client, issued back to back; no new one is issued after `time_limit_s`.

    Callers are created and their threads started before the clock: only requests are timed. Each
    caller first sends `warm_up` untimed requests (its channel's connection set-up), counted as errors
    if they fail. With `stop_on_error`, the first failure stops every caller."""
    result = Level(concurrency)
    callers = [new_caller() for _ in range(concurrency)]
    lock = threading.Lock()
    next_index = iter(range(offset, offset + requests))
    ready = threading.Barrier(concurrency + 1)  # every caller created, started and warmed up
    go = threading.Event()
    deadline = [math.inf]
    stopped = threading.Event()

    def failed(error: Exception) -> None:
        with lock:
            result.errors += 1
            result.first_error = result.first_error or (str(error).splitlines() or [repr(error)])[0]
        if stop_on_error:
            stopped.set()

    def run(caller: Caller) -> None:
        for _ in range(warm_up):
            try:
                caller(texts[offset % len(texts)])
            except Exception as error:  # a failed request is a measured outcome, not a crash
                failed(error)
        ready.wait()
        go.wait()
        while time.monotonic() < deadline[0] and not stopped.is_set():
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            began = time.perf_counter()
            try:
                caller(texts[index % len(texts)])
            except Exception as error:  # a failed request is a measured outcome, not a crash
                failed(error)
                continue
            result.latencies_s.append(time.perf_counter() - began)  # list.append is atomic under the GIL

    threads = [threading.Thread(target=run, args=(caller,), daemon=True) for caller in callers]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        deadline[0] = time.monotonic() + time_limit_s
        cpu_began = process_cpu_s()
        began = time.perf_counter()
        go.set()
        for thread in threads:
            thread.join()
        result.wall_s = time.perf_counter() - began
        result.client_cpu_s = process_cpu_s() - cpu_began
    finally:
        for caller in callers:
            caller.close()
    return result


def sweep(
    new_caller: Callable[[], Caller],
    texts: Sequence[str],
    levels: Sequence[int],
    requests: int,
    container: Container | None = None,
    sample_every_s: float = 1.0,
) -> tuple[list[Level], list[tuple[float, float]]]:
    """Each concurrency level in turn, `requests` requests each; with a container, its memory is sampled
    every `sample_every_s` under that load. Returns the levels and the (seconds, MB) samples."""
    sampler = MemorySampler(container, sample_every_s) if container is not None else None
    if sampler:
        sampler.start()
    try:
        measured = [run_level(new_caller, texts, level, requests) for level in levels]
    finally:
        if sampler:
            sampler.stop()
    return measured, sampler.samples if sampler else []
