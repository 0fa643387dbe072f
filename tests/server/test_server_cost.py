"""Bad input that costs: huge sentences are cut to what the model reads before they are tokenised, so eight
requests of three 1 MB strings at once do not hold up a short sentence sent while they run, and the
server's memory after twenty such requests comes back near its steady state."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as triton

MEGABYTE = 2**20
# Three 1 MB strings and the protocol's framing fit; the fixture's default limit (64 KB) would refuse them.
LIMITS = {"MAX_MESSAGE_BYTES": str(8 * MEGABYTE), "MAX_BATCH_DELAY_MS": "2"}
HUGE = ("the cat sat on the mat " * (MEGABYTE // 23 + 1))[:MEGABYTE]


def _text(sentences: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array(sentences, dtype=object))
    return tensor


def _short_latency(url: str) -> float:
    with triton.InferenceServerClient(url) as client:
        began = time.perf_counter()
        client.infer("cola", [_text(["the dog ran"])])
        return time.perf_counter() - began


def _burst(url: str, requests: int = 8) -> tuple[float, list[BaseException]]:
    """`requests` requests of three 1 MB strings at once and, once they are on their way, one short
    sentence; the short one's latency, and any error the big ones met."""
    errors: list[BaseException] = []
    started = threading.Barrier(requests + 1)

    def big() -> None:
        with triton.InferenceServerClient(url) as client:
            started.wait()
            try:
                result = client.infer("cola", [_text([HUGE, HUGE, HUGE])], client_timeout=60)
                assert result.as_numpy("label").shape == (3,)
            except BaseException as exc:  # reported by the test
                errors.append(exc)

    threads = [threading.Thread(target=big) for _ in range(requests)]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.05)  # the big requests are on the wire and in the server
    latency = _short_latency(url)
    for thread in threads:
        thread.join(timeout=120)
    return latency, errors


def _ordinary_load(url: str, longest: int, callers: int = 9, requests: int = 6) -> None:
    """What a server sees in ordinary use, shaped like the bursts below: `callers` clients at once (the
    burst's eight plus the short one, so the gRPC threads and batch shapes it uses exist), each sending
    requests of three sentences of legal length, from a short one to the longest the cut lets through
    (a kilobyte, not a megabyte: the model reads the same tokens, the request carries a thousandth)."""
    legal = HUGE[:longest]
    started = threading.Barrier(callers)
    errors: list[BaseException] = []

    def caller() -> None:
        with triton.InferenceServerClient(url) as client:
            started.wait()
            try:
                for index in range(requests):
                    client.infer("cola", [_text(["the dog ran", legal[: 16 << index % 4], legal])])
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def _steady_state_mb(server, longest: int) -> float:
    """The container's memory under ordinary load: two rounds of it, the figure after the second (the
    first one's allocations, thread stacks and ORT arenas for these shapes, are then in place; measured
    after one round only, the figure missed them and read about 1.45x after the bursts, close to the
    bound for reasons that have nothing to do with oversize requests)."""
    from sentclf.containers import container_memory_mb

    for _ in range(2):
        _ordinary_load(server.url, longest)
        time.sleep(1.0)
    return container_memory_mb(server.container)


@pytest.fixture
def cost_server(request, model_dir, server_factory, image_factory, tmp_path) -> Iterator[object]:
    if request.param == "process":
        server = server_factory(model_dir, tmp_path / "server.log", **LIMITS)
    else:
        server = image_factory(request.getfixturevalue("server_image"), **LIMITS)
    yield server
    assert server.stop() == 0, server.log()


@pytest.mark.parametrize("cost_server", ["process"], indirect=True)
def test_huge_sentences_do_not_hold_up_a_short_one(cost_server) -> None:
    baseline = statistics.median(_short_latency(cost_server.url) for _ in range(5))
    bound = max(0.25, 20 * baseline)  # "within a few batch delays, not seconds": before the cut about 8 s
    latencies = []
    for _ in range(3):  # a regression holds up every burst; a machine that stalls once must not fail this
        latency, errors = _burst(cost_server.url)
        assert not errors, errors
        latencies.append(latency)
        if latency < bound:
            break
    assert min(latencies) < bound, (latencies, baseline)


@pytest.mark.docker
@pytest.mark.parametrize("cost_server", ["image"], indirect=True)
def test_memory_returns_after_oversize_requests(cost_server, limits) -> None:
    from sentclf.containers import container_memory_mb

    for _ in range(20):
        _short_latency(cost_server.url)
    time.sleep(1.0)
    idle = container_memory_mb(cost_server.container)  # after one caller's short requests: not steady
    # the cut: max_seq_length x sentclf_server.limits.CHARS_PER_TOKEN characters
    steady = _steady_state_mb(cost_server, limits.max_seq_length * 16)
    latencies = []
    for _ in range(3):  # 24 requests of three 1 MB strings, eight at a time
        latency, errors = _burst(cost_server.url)
        assert not errors, errors
        latencies.append(latency)
    time.sleep(1.0)
    after = container_memory_mb(cost_server.container)
    print(
        f"short-request latency during bursts {latencies}; memory after short requests {idle:.1f} MB, "
        f"under ordinary load {steady:.1f} MB, after the bursts {after:.1f} MB"
    )
    assert max(latencies) < 0.5, latencies
    assert after <= 1.5 * steady, (steady, after)


def _http_post(http_url: str, sentences: list[str]) -> int:
    import http.client
    import json

    host, port = http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        body = {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(sentences)], "data": sentences}]
        }
        connection.request("POST", "/v2/models/cola/infer", json.dumps(body).encode())
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _http_burst(http_url: str, requests: int = 8) -> tuple[float, list[object]]:
    """As _burst, over HTTP: the big bodies (3 MB of JSON each) are received by the event loop and parsed
    in worker threads, so the short request's parse and answer are not queued behind them."""
    errors: list[object] = []
    started = threading.Barrier(requests + 1)

    def big() -> None:
        started.wait()
        status = _http_post(http_url, [HUGE, HUGE, HUGE])
        if status != 200:
            errors.append(status)

    threads = [threading.Thread(target=big) for _ in range(requests)]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.05)
    began = time.perf_counter()
    assert _http_post(http_url, ["the dog ran"]) == 200
    latency = time.perf_counter() - began
    for thread in threads:
        thread.join(timeout=120)
    return latency, errors


@pytest.mark.parametrize("cost_server", ["process"], indirect=True)
def test_huge_sentences_do_not_hold_up_a_short_one_over_http(cost_server) -> None:
    baseline = statistics.median(
        _timed(lambda: _http_post(cost_server.http_url, ["the dog ran"])) for _ in range(5)
    )
    bound = max(0.25, 20 * baseline)
    latencies = []
    for _ in range(3):
        latency, errors = _http_burst(cost_server.http_url)
        assert not errors, errors
        latencies.append(latency)
        if latency < bound:
            break
    print(f"HTTP short request behind eight 3 MB bodies: {latencies} s (alone {baseline * 1000:.1f} ms)")
    assert min(latencies) < bound, (latencies, baseline)


def _timed(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began
