"""The Open Inference Protocol over HTTP/JSON, driven with clients no one here wrote: tritonclient.http (JSON
and binary tensors) and plain curl. Every endpoint, the protocol's errors for bad requests (each followed by
a ready server), the same answers as over gRPC, and the metrics every request and refusal leaves, for the
server from the source tree and from its image (the `server` fixture)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

SENTENCES = ["the cat sat on the mat", "dog", "colorless green ideas sleep furiously", "héllo wörld ✓"]


@pytest.fixture(scope="module")
def http_client(server) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(server.http_url)
    yield client
    client.close()


def scrape(server) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def curl(*args: str, data: str | None = None) -> tuple[int, str]:
    """curl as a user types it; returns (HTTP status, body)."""
    command = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args]
    done = subprocess.run(command, input=data, capture_output=True, text=True, timeout=60, check=True)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def text_input(sentences: list[str], binary: bool) -> triton_http.InferInput:
    tensor = triton_http.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array(sentences, dtype=object), binary_data=binary)
    return tensor


def assert_ready(server) -> None:
    status, body = curl(f"http://{server.http_url}/v2/health/ready")
    assert (status, body) == (200, "")


# --- every endpoint ----------------------------------------------------------------------------------


def test_health_and_metadata_with_tritonclient(server, http_client, ticket_labels) -> None:
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert http_client.is_model_ready("cola") and http_client.is_model_ready("cola", "1")
    assert not http_client.is_model_ready("cola", "2")
    assert not http_client.is_model_ready("nope")
    metadata = http_client.get_server_metadata()
    assert metadata["name"] == "sentclf-server"
    assert "binary_tensor_data" in metadata["extensions"]
    model = http_client.get_model_metadata("cola")
    assert model["name"] == "cola" and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in model["outputs"]] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 2]),
        ("label_name", "BYTES", [-1]),
    ]
    assert http_client.get_model_metadata("cola", "1") == model
    config = http_client.get_model_config("cola")
    assert json.loads(config["parameters"]["label_names"]["string_value"]) == ["unacceptable", "acceptable"]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        http_client.get_model_metadata("nope")


def test_every_endpoint_with_curl(server) -> None:
    base = f"http://{server.http_url}"
    assert curl(f"{base}/v2/health/live") == (200, "")
    assert curl(f"{base}/v2/health/ready") == (200, "")
    assert curl(f"{base}/v2/models/cola/ready") == (200, "")
    assert curl(f"{base}/v2/models/cola/versions/1/ready") == (200, "")
    assert curl(f"{base}/v2/models/cola/versions/2/ready")[0] == 400
    status, body = curl(f"{base}/v2")
    assert status == 200 and json.loads(body)["name"] == "sentclf-server"
    status, body = curl(f"{base}/v2/models/cola")
    assert status == 200 and json.loads(body)["platform"] == "onnxruntime_onnx"
    request = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": SENTENCES[:2]}]}
    status, body = curl(
        "-X", "POST", f"{base}/v2/models/cola/infer", "-H", "Content-Type: application/json", "-d", "@-",
        data=json.dumps(request),
    )  # fmt: skip
    assert status == 200, body
    answer = json.loads(body)
    assert (answer["model_name"], answer["model_version"]) == ("cola", "1")
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert list(outputs) == ["label", "probabilities", "label_name"]
    assert outputs["label"]["shape"] == [2] and outputs["probabilities"]["shape"] == [2, 2]
    names = ["unacceptable", "acceptable"]
    assert outputs["label_name"]["data"] == [names[i] for i in outputs["label"]["data"]]


def _grpc_answer(server, sentences: list[str]) -> triton_grpc.InferResult:
    with triton_grpc.InferenceServerClient(server.url) as client:
        tensor = triton_grpc.InferInput("text", [len(sentences)], "BYTES")
        tensor.set_data_from_numpy(np.array(sentences, dtype=object))
        return client.infer("cola", [tensor], request_id="same")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_answers_equal_grpc(server, http_client, binary: bool, model_dir: Path, reference_probs) -> None:
    outputs = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    outputs.append(triton_http.InferRequestedOutput("label_name", binary_data=binary))
    http = http_client.infer("cola", [text_input(SENTENCES, binary)], outputs=outputs, request_id="same")
    grpc_result = _grpc_answer(server, SENTENCES)
    for name in ("label", "probabilities"):
        np.testing.assert_array_equal(http.as_numpy(name), grpc_result.as_numpy(name))
    # BYTES: JSON data arrive as str, binary data as bytes (tritonclient's as_numpy)
    assert [_text(x) for x in http.as_numpy("label_name")] == [
        _text(x) for x in grpc_result.as_numpy("label_name")
    ]
    np.testing.assert_allclose(
        http.as_numpy("probabilities"), reference_probs(model_dir / "tokenizer.json", SENTENCES), atol=1e-5
    )
    assert http.get_response()["id"] == "same"
    # tritonclient's defaults: binary input, every output in binary
    default = http_client.infer("cola", [text_input(SENTENCES, True)])
    np.testing.assert_array_equal(default.as_numpy("probabilities"), grpc_result.as_numpy("probabilities"))
    assert default.as_numpy("label_name").tolist() == grpc_result.as_numpy("label_name").tolist()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_requested_outputs_in_order(server, http_client) -> None:
    outputs = [triton_http.InferRequestedOutput(n, binary_data=False) for n in ("label_name", "label")]
    result = http_client.infer("cola", [text_input(["dog"], False)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label_name", "label"]


# --- bad requests: the protocol's error JSON, and the server still ready ------------------------------


def _body(datatype: str = "BYTES", shape: object = (1,), data: object = ("dog",), **extra: object) -> str:
    tensor = {"name": "text", "datatype": datatype, "shape": list(shape), "data": list(data)}
    return json.dumps({"inputs": [tensor], **extra})


BAD_REQUESTS = {
    "wrong datatype": ("cola", _body(datatype="FP32", data=[1.0]), 400, "must be BYTES"),
    "shape mismatch": ("cola", _body(shape=[3], data=["a", "b"]), 400, r"shape \[3\] but 2 elements"),
    "2-D shape": ("cola", _body(shape=[1, 1]), 400, r"shape \[batch\]"),
    "unknown model": ("nope", _body(), 404, "unknown model 'nope'"),
    "unknown version": ("cola/versions/9", _body(), 404, "no version '9'"),
    "malformed JSON": ("cola", '{"inputs": [', 400, "malformed JSON"),
    "not an object": ("cola", "[1, 2]", 400, "must be a JSON object"),
    "repeated output": (
        "cola",
        _body(outputs=[{"name": "label"}, {"name": "label"}]),
        400,
        "requested twice",
    ),
    "deep JSON": ("cola", "[" * 30_000 + "]" * 30_000, 400, "nested too deep"),
    "lone surrogate": ("cola", _body(data=["ok \ud800"]), 400, "element 0 is not valid Unicode"),
    "too many sentences": ("cola", _body(shape=[65], data=["a"] * 65), 400, "MAX_REQUEST_BATCH"),
    "numbers for strings": ("cola", _body(data=[7]), 400, "JSON strings"),
    "wrong input name": ("cola", json.dumps({"inputs": [{"name": "x"}]}), 400, "missing input 'text'"),
    "unknown output": ("cola", _body(outputs=[{"name": "logits"}]), 400, "unknown output 'logits'"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_answers_the_protocol_error(server, case: str) -> None:
    model, body, status, message = BAD_REQUESTS[case]
    url = f"http://{server.http_url}/v2/models/{model}/infer"
    got, text = curl("-X", "POST", url, "-H", "Content-Type: application/json", "-d", "@-", data=body)
    assert got == status, text
    error = json.loads(text)
    assert list(error) == ["error"]
    assert re.search(message, error["error"]), error
    assert_ready(server)


def test_ten_megabyte_body_is_refused_unread(server, tmp_path: Path, limits) -> None:
    big = tmp_path / "big.json"
    big.write_text(_body(data=["x" * (10 * 2**20)]))
    url = f"http://{server.http_url}/v2/models/cola/infer"
    status, text = curl("-X", "POST", url, "-H", "Content-Type: application/json", "--data-binary", f"@{big}")
    assert status == 413, text
    assert f"limit of {limits.max_message_bytes} bytes" in json.loads(text)["error"]
    # the same body without Expect: 100-continue, as tritonclient sends it: read, thrown away, refused
    request = urllib.request.Request(url, data=big.read_bytes(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413 and "error" in json.loads(info.value.read())
    assert_ready(server)


def test_unknown_paths_and_methods(server) -> None:
    base = f"http://{server.http_url}"
    status, text = curl(f"{base}/v2/nothing/here")
    assert status == 404 and "error" in json.loads(text)
    status, text = curl(f"{base}/v2/models/cola/infer")  # GET
    assert status == 405 and "error" in json.loads(text)
    status, text = curl(
        "-X", "POST", f"{base}/v2/models/cola/infer", "-H", "Transfer-Encoding: chunked", "-d", "{}"
    )
    assert status == 411
    assert_ready(server)


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics_count_http_requests_and_refusals(server, http_client) -> None:
    before = scrape(server)
    http_client.infer("cola", [text_input(["dog"], False)])
    curl("-X", "POST", f"http://{server.http_url}/v2/models/cola/infer", "-d", "{")
    curl(f"http://{server.http_url}/v2/nope")
    after = scrape(server)
    model = {"model": "cola", "version": "1", "protocol": "http"}
    assert delta(before, after, "sentclf_inference_request_success_total", **model) == 1
    assert (
        delta(before, after, "sentclf_inference_request_failure_total", code="INVALID_ARGUMENT", **model) == 1
    )
    assert delta(before, after, "sentclf_inference_request_duration_seconds_count", **model) == 2
    assert (
        delta(before, after, "sentclf_inference_queue_duration_seconds_count", model="cola", version="1") == 1
    )
    assert (
        delta(before, after, "sentclf_inference_compute_duration_seconds_count", model="cola", version="1")
        == 1
    )
    assert after[("sentclf_inference_requests_in_flight", (("model", "cola"), ("version", "1")))] == 0
    unknown = {"protocol": "http", "endpoint": "unknown", "code": "NOT_FOUND"}
    assert delta(before, after, "sentclf_requests_total", **unknown) == 1


def test_grpc_layer_refusals_are_counted(server, limits) -> None:
    before = scrape(server)
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="cola")
        tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(b"x" * (limits.max_message_bytes + 1))
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        unknown = channel.unary_unary("/no.Such/Method")
        with pytest.raises(grpc.RpcError) as info:
            unknown(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    after = scrape(server)
    too_large = {"protocol": "grpc", "endpoint": "ModelInfer", "code": "RESOURCE_EXHAUSTED"}
    assert delta(before, after, "sentclf_requests_total", **too_large) == 1
    model = {"model": "cola", "version": "1", "protocol": "grpc"}
    assert (
        delta(before, after, "sentclf_inference_request_failure_total", code="RESOURCE_EXHAUSTED", **model)
        == 1
    )
    unimplemented = {"protocol": "grpc", "code": "UNIMPLEMENTED"}
    assert delta(before, after, "sentclf_requests_total", endpoint="RepositoryIndex", **unimplemented) == 1
    assert delta(before, after, "sentclf_requests_total", endpoint="unknown", **unimplemented) == 1


def test_metrics_port_answers_only_metrics(server) -> None:
    base = f"http://127.0.0.1:{server.metrics_port}"
    assert curl(f"{base}/metrics")[0] == 200
    for path in ("/", "/v2/health/ready", "/healthz"):
        assert curl(f"{base}{path}")[0] == 404


def test_a_burst_of_new_connections_is_accepted_not_reset(server) -> None:
    """64 clients connecting at the same moment (a load test's callers, a load balancer filling its pool):
    each is accepted and answered, none reset and none left waiting a second for a SYN retransmit, as with
    socketserver's listen backlog of 5."""
    host, port = server.http_url.split(":")
    clients = 64
    start = threading.Barrier(clients)
    outcomes: list[object] = []

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        start.wait()
        began = time.perf_counter()
        try:
            connection.request("GET", "/v2/health/ready")
            response = connection.getresponse()
            response.read()
            outcomes.append((response.status, time.perf_counter() - began))
        except OSError as error:
            outcomes.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    errors = [o for o in outcomes if not isinstance(o, tuple)]
    assert not errors and len(outcomes) == clients, errors
    assert {status for status, _ in outcomes} == {200}
    assert max(seconds for _, seconds in outcomes) < 0.9, sorted(seconds for _, seconds in outcomes)[-5:]
    assert_ready(server)


def test_zero_size_batch_is_answered_with_empty_outputs(server) -> None:
    url = f"http://{server.http_url}/v2/models/cola/infer"
    status, text = curl("-X", "POST", url, "-d", "@-", data=_body(shape=[0], data=[]))
    assert status == 200, text
    outputs = json.loads(text)["outputs"]
    assert [(o["name"], o["shape"], o["data"]) for o in outputs] == [
        ("label", [0], []),
        ("probabilities", [0, 2], []),
        ("label_name", [0], []),
    ]


def test_methods_head_and_headers(server) -> None:
    """405 with the protocol's error JSON and Allow for a method a route does not take; HEAD where GET
    works; no Server header (no runtime version) on any answer, errors included, on both ports."""
    base = f"http://{server.http_url}"
    for method, path in (("PUT", "/v2/health/live"), ("DELETE", "/v2/models/cola"), ("PATCH", "/v2")):
        status, text = curl("-X", method, f"{base}{path}")
        assert status == 405 and "is not allowed" in json.loads(text)["error"], (method, path, text)
    for path in ("/v2/health/ready", "/v2/models/cola", "/v2"):
        head = subprocess.run(
            ["curl", "-sS", "-I", f"{base}{path}"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        assert head.startswith("HTTP/1.1 200"), head
    urls = [
        f"{base}/v2",
        f"{base}/v2/nothing",
        f"{base}/v2/models/cola/infer",
        f"http://127.0.0.1:{server.metrics_port}/metrics",
        f"http://127.0.0.1:{server.metrics_port}/nothing",
    ]
    for url in urls:
        head = subprocess.run(
            ["curl", "-sS", "-D", "-", "-o", "/dev/null", url], capture_output=True, text=True, timeout=30
        ).stdout
        assert "server:" not in head.lower() and "python" not in head.lower(), head


def _raw_exchange(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_request_line_and_header_limits_are_4xx(server) -> None:
    host, port = server.http_url.split(":")
    garbage = _raw_exchange(host, int(port), b"GARBAGE\r\n\r\n")
    assert re.match(rb"HTTP/1\.1 4\d\d ", garbage), garbage[:200]
    long_line = _raw_exchange(host, int(port), b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert re.match(rb"HTTP/1\.1 4\d\d ", long_line), long_line[:200]
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(500))
    many = _raw_exchange(host, int(port), b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert re.match(rb"HTTP/1\.1 4\d\d ", many), many[:200]
    assert_ready(server)


def test_one_caller_is_not_held_by_delayed_acks(server) -> None:
    """A lone keep-alive caller's infer answered in about a millisecond, not the 40 ms of a client's
    delayed ACK (the response's headers and body are two writes: the socket needs TCP_NODELAY)."""
    host, port = server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    times = []
    try:
        for _ in range(15):
            began = time.perf_counter()
            connection.request("POST", "/v2/models/cola/infer", _body().encode())
            response = connection.getresponse()
            response.read()
            times.append(time.perf_counter() - began)
            assert response.status == 200
    finally:
        connection.close()
    assert sorted(times)[len(times) // 2] < 0.02, sorted(times)
