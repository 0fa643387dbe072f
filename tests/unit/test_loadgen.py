"""The one load generator (sentclf/loadgen.py): what it counts, with fake callers, and its gRPC caller
against a trivial in-process KServe v2 server."""

import json
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from sentclf import loadgen


class FakeCaller:
    """Records what it was asked; fails on the texts in `failing`; sleeps `delay_s` per request."""

    def __init__(self, log: list[str], failing: set[str] = frozenset(), delay_s: float = 0.0) -> None:
        self.log, self.failing, self.delay_s = log, failing, delay_s
        self.closed = False

    def __call__(self, text: str) -> None:
        time.sleep(self.delay_s)
        self.log.append(text)
        if text in self.failing:
            raise RuntimeError(f"refused {text}\nsecond line")

    def close(self) -> None:
        self.closed = True


def factory(log, made, **kwargs):
    def new():
        made.append(FakeCaller(log, **kwargs))
        return made[-1]

    return new


def test_a_level_sends_the_requests_in_order_from_its_offset_cycling_and_closes_every_caller():
    log, made = [], []
    level = loadgen.run_level(factory(log, made), ["a", "b", "c"], concurrency=1, requests=5, offset=1)
    assert log == ["b", "c", "a", "b", "c"]
    assert len(level.latencies_s) == 5 and level.errors == 0 and level.first_error == ""
    assert level.wall_s > 0 and level.throughput == pytest.approx(5 / level.wall_s)
    assert level.client_cpu_s >= 0
    assert len(made) == 1 and made[0].closed


def test_concurrent_callers_share_the_requests_and_failures_are_counted_not_raised():
    log, made = [], []
    texts = [f"t{i}" for i in range(10)]
    level = loadgen.run_level(factory(log, made, failing={"t3", "t7"}), texts, concurrency=4, requests=40)
    assert len(made) == 4 and all(caller.closed for caller in made)
    assert sorted(log) == sorted(texts * 4)
    assert level.errors == 8 and len(level.latencies_s) == 32
    assert level.first_error in ("refused t3", "refused t7")  # its first line only
    row = level.row()
    assert set(row) == {"concurrency", "throughput_rps", "p50_ms", "p99_ms", "errors", "first_error"}
    assert row["concurrency"] == 4 and row["errors"] == 8


def test_warm_up_requests_are_not_timed_and_the_first_failure_can_stop_the_level():
    log, made = [], []
    level = loadgen.run_level(factory(log, made), ["a", "b"], concurrency=2, requests=4, warm_up=3)
    assert len(log) == 2 * 3 + 4 and len(level.latencies_s) == 4
    log.clear()
    level = loadgen.run_level(
        factory(log, [], failing={"b"}), ["a", "b", "c"], concurrency=1, requests=100, stop_on_error=True
    )
    assert log == ["a", "b"] and level.errors == 1 and len(level.latencies_s) == 1


def test_a_time_limit_stops_issuing_requests():
    log = []
    level = loadgen.run_level(
        factory(log, [], delay_s=0.01), ["a"], concurrency=2, requests=10**6, time_limit_s=0.2
    )
    assert 0 < len(level.latencies_s) < 200 and level.wall_s < 2


def test_levels_fold_rounds_together():
    level = loadgen.Level(4, [0.01, 0.02], errors=1, first_error="x", wall_s=1.0, client_cpu_s=0.5)
    level.add(loadgen.Level(4, [0.03], errors=2, first_error="y", wall_s=0.5, client_cpu_s=0.1))
    assert level.latencies_s == [0.01, 0.02, 0.03] and level.errors == 3 and level.first_error == "x"
    assert level.throughput == pytest.approx(2.0)
    assert level.client_cpu_us_per_request == pytest.approx(2e5)
    assert np.isnan(loadgen.Level(1).percentile_ms(50)) and loadgen.Level(1).throughput == 0.0


def test_a_sweep_without_a_container_samples_no_memory():
    log = []
    levels, samples = loadgen.sweep(factory(log, []), ["a", "b"], [1, 3], requests=6)
    assert [level.concurrency for level in levels] == [1, 3] and samples == []
    assert len(log) == 12


class TinyServer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers ModelInfer for model `cola` (rejects any other) and records the requests' texts."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lock = threading.Lock()

    def ModelInfer(self, request, context):  # noqa: N802 (the generated service's name)
        if request.model_name != "cola":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_name}")
        raw = request.raw_input_contents[0]
        with self.lock:
            self.texts.append(raw[4 : 4 + int.from_bytes(raw[:4], "little")].decode())
        response = service_pb2.ModelInferResponse(model_name="cola", model_version=request.model_version)
        label = response.outputs.add(name="label", datatype="INT64")
        label.shape.append(1)
        response.raw_output_contents.append(np.array([1], dtype=np.int64).tobytes())
        return response


@pytest.fixture
def tiny_server():
    servicer = TinyServer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(grace=None)


def test_grpc_callers_send_one_sentence_per_request_to_the_named_model(tiny_server):
    port, servicer = tiny_server
    texts = ["the cat sat", "green ideas", "he reads"]
    level = loadgen.run_level(loadgen.grpc_callers(port, "cola", "1"), texts, concurrency=2, requests=9)
    assert level.errors == 0 and len(level.latencies_s) == 9
    assert sorted(servicer.texts) == sorted(texts * 3)
    wrong = loadgen.run_level(loadgen.grpc_callers(port, "other"), texts, concurrency=1, requests=2)
    assert wrong.errors == 2 and "no model other" in wrong.first_error


class TinyHttpHandler(BaseHTTPRequestHandler):
    """The protocol's infer route for model `cola` over HTTP/1.1 keep-alive; 404 for any other model.
    Records each request's path, body and the client port it came from (one port = one connection)."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, dict, int]] = []

    def do_POST(self):  # noqa: N802 (BaseHTTPRequestHandler's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        TinyHttpHandler.seen.append((self.path, body, self.client_address[1]))
        if self.path.startswith("/v2/models/cola/"):
            status, answer = 200, {"model_name": "cola", "outputs": [{"name": "label", "data": [1]}]}
        else:
            status, answer = 404, {"error": "no model other"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def tiny_http_server():
    TinyHttpHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), TinyHttpHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_callers_post_the_protocols_json_over_one_kept_alive_connection_each(tiny_http_server):
    texts = ["the cat sat", "green ideas", "he reads"]
    level = loadgen.run_level(
        loadgen.http_callers(tiny_http_server, "cola", "1"), texts, concurrency=2, requests=9
    )
    assert level.errors == 0 and len(level.latencies_s) == 9
    seen = TinyHttpHandler.seen
    assert {path for path, _, _ in seen} == {"/v2/models/cola/versions/1/infer"}
    assert sorted(body["inputs"][0]["data"][0] for _, body, _ in seen) == sorted(texts * 3)
    assert seen[0][1]["inputs"][0] | {"data": None} == {
        "name": "text",
        "datatype": "BYTES",
        "shape": [1],
        "data": None,
    }
    assert [o["name"] for o in seen[0][1]["outputs"]] == ["label", "probabilities"]
    assert len({client_port for _, _, client_port in seen}) == 2  # keep-alive: one connection per caller
    wrong = loadgen.run_level(
        loadgen.http_callers(tiny_http_server, "other"), texts, concurrency=1, requests=2
    )
    assert (
        wrong.errors == 2
        and wrong.first_error.startswith("HTTP 404")
        and "no model other" in wrong.first_error
    )
