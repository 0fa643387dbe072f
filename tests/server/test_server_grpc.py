"""End-to-end tests: `python -m sentclf_server` in a subprocess on loopback, driven with tritonclient
and raw gRPC stubs (KServe v2 inference.GRPCInferenceService + grpc.health.v1)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from sentclf.server_images import SERVER_PYTHONPATH
from sentclf_server.codec import decode_bytes_tensor, encode_bytes_tensor

SENTENCES = ["the cat sat on the mat", "dog", "colorless green ideas sleep furiously", "héllo wörld ✓"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def client(server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.url) as triton_client:
        yield triton_client


@pytest.fixture(scope="module")
def stub(server) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def text_input(sentences: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array(sentences, dtype=object))  # tritonclient sends raw contents
    return tensor


def infer(client: triton.InferenceServerClient, sentences: list[str], **kwargs) -> triton.InferResult:
    return client.infer("cola", [text_input(sentences)], **kwargs)


def assert_still_serving(client: triton.InferenceServerClient) -> None:
    result = infer(client, ["the dog ran"])
    assert result.as_numpy("probabilities").shape == (1, 2)


def scrape(server) -> dict[tuple[str, tuple], float]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


# --- health, readiness, metadata --------------------------------------------------------------------


def test_health_serving_after_start(server, client) -> None:
    assert server.health("") == SERVING
    assert server.health("inference.GRPCInferenceService") == SERVING
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cola") and client.is_model_ready("cola", "1")
    assert not client.is_model_ready("cola", "2")
    assert not client.is_model_ready("nope")


def test_server_metadata(client) -> None:
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "sentclf-server"
    assert metadata["version"]
    assert metadata["extensions"] == ["model_configuration"]  # Triton's ModelConfig, nothing else


def test_model_metadata(client, stub) -> None:
    metadata = client.get_model_metadata("cola", as_json=True)
    assert metadata["name"] == "cola" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": ["-1"]},
        {"name": "probabilities", "datatype": "FP32", "shape": ["-1", "2"]},
        {"name": "label_name", "datatype": "BYTES", "shape": ["-1"]},
    ]
    assert client.get_model_metadata("cola", "1", as_json=True)["name"] == "cola"
    for name, version in [("nope", ""), ("cola", "2")]:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name, version=version), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_model_config_names_the_classes(client, stub) -> None:
    config = client.get_model_config("cola", as_json=True)["config"]
    assert json.loads(config["parameters"]["label_names"]["string_value"]) == ["unacceptable", "acceptable"]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("label", "TYPE_INT64", ["-1"]),
        ("probabilities", "TYPE_FP32", ["-1", "2"]),
        ("label_name", "TYPE_STRING", ["-1"]),
    ]
    assert client.get_model_config("cola", "1", as_json=True)["config"]["name"] == "cola"
    for name, version in [("nope", ""), ("cola", "2")]:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelConfig(service_pb2.ModelConfigRequest(name=name, version=version), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


# --- inference ---------------------------------------------------------------------------------------


CLASSES = ["unacceptable", "acceptable"]


def check_outputs(labels: np.ndarray, probs: np.ndarray, names: np.ndarray, expected: np.ndarray) -> None:
    assert labels.dtype == np.int64 and labels.shape == (len(expected),)
    assert probs.dtype == np.float32 and probs.shape == (len(expected), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert names.shape == (len(expected),)
    assert [bytes(name).decode() for name in names] == [CLASSES[i] for i in labels]


def test_infer_raw_contents(client, model_dir: Path, reference_probs) -> None:
    result = infer(client, SENTENCES, request_id="req-42")
    check_outputs(
        result.as_numpy("label"),
        result.as_numpy("probabilities"),
        result.as_numpy("label_name"),
        reference_probs(model_dir / "tokenizer.json", SENTENCES),
    )
    assert set(result.as_numpy("label")) == {0, 1}  # the fixture model really separates sentences
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("cola", "1", "req-42")


def test_infer_typed_contents(stub, model_dir: Path, reference_probs) -> None:
    request = service_pb2.ModelInferRequest(model_name="cola", model_version="1")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(SENTENCES)])
    tensor.contents.bytes_contents.extend(s.encode() for s in SENTENCES)
    response = stub.ModelInfer(request, timeout=10)
    outputs = {
        o.name: (o, raw) for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    assert [(o.datatype, o.shape) for o, _ in outputs.values()] == [
        ("INT64", [4]),
        ("FP32", [4, 2]),
        ("BYTES", [4]),
    ]
    labels = np.frombuffer(outputs["label"][1], dtype="<i8")
    probs = np.frombuffer(outputs["probabilities"][1], dtype="<f4").reshape(4, 2)
    names = np.array(decode_bytes_tensor(outputs["label_name"][1]), dtype=object)
    check_outputs(labels, probs, names, reference_probs(model_dir / "tokenizer.json", SENTENCES))


def test_requested_outputs_are_honoured(client) -> None:
    only_probs = infer(client, SENTENCES[:2], outputs=[triton.InferRequestedOutput("probabilities")])
    assert only_probs.as_numpy("label") is None
    assert only_probs.as_numpy("probabilities").shape == (2, 2)
    assert only_probs.as_numpy("label_name") is None
    only_label = infer(client, SENTENCES[:2], outputs=[triton.InferRequestedOutput("label")])
    assert only_label.as_numpy("probabilities") is None and only_label.as_numpy("label_name") is None
    assert only_label.as_numpy("label").shape == (2,)
    # What clients written before label_name asked for: exactly those two, nothing more.
    both = infer(
        client, SENTENCES[:2], outputs=[triton.InferRequestedOutput(n) for n in ("label", "probabilities")]
    )
    assert [o.name for o in both.get_response().outputs] == ["label", "probabilities"]
    only_name = infer(client, SENTENCES[:2], outputs=[triton.InferRequestedOutput("label_name")])
    assert [o.name for o in only_name.get_response().outputs] == ["label_name"]
    assert only_name.as_numpy("label_name").tolist() == [b"acceptable", b"unacceptable"]


def test_same_sentence_alone_and_in_a_padded_batch(client) -> None:
    alone = infer(client, ["dog"]).as_numpy("probabilities")
    batched = infer(client, ["colorless green ideas sleep furiously very slowly", "dog"])
    np.testing.assert_allclose(batched.as_numpy("probabilities")[1], alone[0], atol=1e-6)


# --- bad requests ------------------------------------------------------------------------------------


def _req(*sentences: bytes, raw: bool = False, **fields) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=fields.pop("model_name", "cola"), **fields)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(sentences)])
    if raw:
        request.raw_input_contents.append(encode_bytes_tensor(sentences))
    else:
        tensor.contents.bytes_contents.extend(sentences)
    return request


def _edit(request: service_pb2.ModelInferRequest, edit: Callable) -> service_pb2.ModelInferRequest:
    edit(request)
    return request


BAD_REQUESTS = {
    "unknown model": (_req(b"a", model_name="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    "unknown version": (_req(b"a", model_version="2"), grpc.StatusCode.NOT_FOUND, "no version '2'"),
    "no input": (service_pb2.ModelInferRequest(model_name="cola"), INVALID, "missing input 'text'"),
    "wrong input name": (
        _edit(_req(b"a"), lambda r: setattr(r.inputs[0], "name", "sentence")),
        INVALID,
        "missing input 'text'",
    ),
    "extra input": (
        _edit(_req(b"a"), lambda r: r.inputs.add(name="extra", datatype="BYTES", shape=[1])),
        INVALID,
        "unexpected input(s) ['extra']",
    ),
    "wrong datatype": (
        _edit(_req(b"a"), lambda r: setattr(r.inputs[0], "datatype", "FP32")),
        INVALID,
        "BYTES",
    ),
    "2-D shape": (_edit(_req(b"a"), lambda r: r.inputs[0].shape.append(1)), INVALID, "shape [batch] (1-D)"),
    "shape mismatch": (
        _edit(_req(b"a"), lambda r: r.inputs[0].shape.__setitem__(0, 2)),
        INVALID,
        "shape [2] but 1 elements",
    ),
    "non-UTF-8 typed": (_req(b"ok", b"\xff\xfe"), INVALID, "element 1 is not valid UTF-8"),
    "non-UTF-8 raw": (_req(b"\xc3\x28", raw=True), INVALID, "element 0 is not valid UTF-8"),
    "malformed raw": (
        _edit(_req(b"a", raw=True), lambda r: r.raw_input_contents.__setitem__(0, b"\x09\x00\x00\x00ab")),
        INVALID,
        "raw BYTES are malformed",
    ),
    "batch over limit": (_req(*[b"dog"] * 65), INVALID, "exceeds MAX_REQUEST_BATCH=64"),
    "unknown output": (
        _edit(_req(b"a"), lambda r: r.outputs.add(name="logits")),
        INVALID,
        "unknown output 'logits'",
    ),
    "repeated output": (
        _edit(_req(b"a"), lambda r: [r.outputs.add(name="label") for _ in range(2)]),
        INVALID,
        "'label' requested twice",
    ),
    "classification output": (
        _edit(_req(b"a"), lambda r: r.outputs.add(name="label").parameters["classification"].int64_param),
        INVALID,
        "not supported",
    ),
}


def test_zero_size_batch_is_answered_with_empty_outputs(stub) -> None:
    """Triton infers a zero-size tensor: 200 / OK with outputs of shape [0] (and [0, N])."""
    response = stub.ModelInfer(_req(), timeout=10)
    assert [(o.name, list(o.shape)) for o in response.outputs] == [
        ("label", [0]),
        ("probabilities", [0, 2]),
        ("label_name", [0]),
    ]
    assert list(response.raw_output_contents) == [b"", b"", b""]


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_status_and_server_keeps_serving(case: str, stub, client) -> None:
    request, code, message = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=10)
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()
    assert_still_serving(client)


def test_oversized_message_is_resource_exhausted(stub, client, limits) -> None:
    request = _req(b"dog " * (limits.max_message_bytes // 4 + 1))
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(client)


def test_unimplemented_rpcs(stub, client) -> None:
    calls = [
        lambda: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="cola"), timeout=5),
        lambda: stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=5),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert_still_serving(client)


# --- metrics and dynamic batching ---------------------------------------------------------------------


def test_metrics_count_requests_by_status_code(server, client, stub) -> None:
    before = scrape(server)
    infer(client, ["dog"])
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_req(b"\xff"), timeout=5)
    after = scrape(server)
    infer_ = {"protocol": "grpc", "endpoint": "ModelInfer"}
    assert delta(before, after, "sentclf_requests_total", code="OK", **infer_) == 1
    assert delta(before, after, "sentclf_requests_total", code="INVALID_ARGUMENT", **infer_) == 1
    model = {"model": "cola", "version": "1", "protocol": "grpc"}
    assert delta(before, after, "sentclf_inference_request_success_total", **model) == 1
    failure = "sentclf_inference_request_failure_total"
    assert delta(before, after, failure, code="INVALID_ARGUMENT", **model) == 1
    assert delta(before, after, "sentclf_inference_request_duration_seconds_count", **model) == 2
    # the invalid one never reached the model
    assert delta(before, after, "sentclf_inference_batch_size_count", model="cola", version="1") == 1


def _fire_concurrently(client, sentences: list[str]) -> list[tuple[object, object]]:
    done: queue.Queue = queue.Queue()
    for index, sentence in enumerate(sentences):
        client.async_infer(
            "cola",
            [text_input([sentence])],
            callback=lambda result, error, i=index: done.put((i, result, error)),
        )
    outcomes = sorted((done.get(timeout=30) for _ in sentences), key=lambda item: item[0])
    return [(result, error) for _, result, error in outcomes]


def test_dynamic_batching_merges_concurrent_requests(slow_server, slow_model_dir, reference_probs) -> None:
    # The slow model: with the fast one a loaded machine could answer each request before the next came.
    sentences = [SENTENCES[i % len(SENTENCES)] + " the" * (i % 5) for i in range(32)]
    expected = reference_probs(slow_model_dir / "tokenizer.json", sentences)
    server = slow_server
    before = scrape(server)
    with triton.InferenceServerClient(server.url) as slow_client:
        outcomes = _fire_concurrently(slow_client, sentences)
    after = scrape(server)
    for (result, error), row in zip(outcomes, expected, strict=True):
        assert error is None, error
        np.testing.assert_allclose(result.as_numpy("probabilities")[0], row, atol=1e-5)  # split back right
    runs = delta(before, after, "sentclf_inference_batch_size_count", model="cola", version="1")
    assert delta(before, after, "sentclf_inference_batch_size_sum", model="cola", version="1") == 32
    single_runs = delta(
        before, after, "sentclf_inference_batch_size_bucket", le="1.0", model="cola", version="1"
    )
    assert runs < 32, "every request ran alone: no dynamic batching"
    assert runs - single_runs >= 1, "no model run had more than one sentence"


# --- process lifecycle -------------------------------------------------------------------------------


def test_graceful_drain_finishes_in_flight_requests(slow_model_dir, server_factory, tmp_path) -> None:
    # Every model run takes ~0.2 s with this model and MAX_BATCH_SIZE=1 runs the requests one by one, so
    # once the first answer is back the other three are surely still queued or running.
    n = 4
    srv = server_factory(slow_model_dir, tmp_path / "server.log", DRAIN_DELAY_S="1.0", MAX_BATCH_SIZE="1")
    try:
        with triton.InferenceServerClient(srv.url) as slow_client:
            done: queue.Queue = queue.Queue()
            for i in range(n):
                slow_client.async_infer(
                    "cola",
                    [text_input([f"sentence {i}"])],
                    callback=lambda result, error: done.put((result, error)),
                )
            outcomes = [done.get(timeout=20)]
            srv.proc.send_signal(signal.SIGTERM)
            # Generous: a stalled CI machine once took over 5 s; the drain below must hold whatever the delay.
            deadline = time.monotonic() + 15
            while srv.health() != NOT_SERVING:  # during DRAIN_DELAY_S the server still answers health
                assert time.monotonic() < deadline, f"health never turned NOT_SERVING:\n{srv.log()}"
                time.sleep(0.02)
            assert not client_ready(srv.url)
            outcomes += [done.get(timeout=30) for _ in range(n - 1)]
        assert [error for _, error in outcomes] == [None] * n
        assert all(result.as_numpy("probabilities").shape == (1, 2) for result, _ in outcomes)
        assert srv.proc.wait(timeout=30) == 0, srv.log()
        assert "drained; exiting" in srv.log()
        with triton.InferenceServerClient(srv.url) as late_client, pytest.raises(InferenceServerException):
            late_client.is_server_live(client_timeout=2)
    finally:
        srv.stop()


def client_ready(url: str) -> bool:
    with triton.InferenceServerClient(url) as ready_client:
        return ready_client.is_server_ready(client_timeout=2)


def _run_to_exit(command: list[str], model_dir: Path, **env: str) -> tuple[int, str]:
    full_env = {**os.environ, "PYTHONPATH": SERVER_PYTHONPATH}
    full_env.update(
        MODEL_DIR=str(model_dir), BIND_ADDRESS="127.0.0.1", GRPC_PORT="0", METRICS_PORT="0", **env
    )
    proc = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr


def test_bad_configuration_exits_2(server_cmd: list[str], model_dir: Path) -> None:
    code, stderr = _run_to_exit(server_cmd, model_dir, ORT_GRAPH_OPTIMIZATION="turbo")
    assert code == 2 and "ORT_GRAPH_OPTIMIZATION must be one of" in stderr


def test_broken_model_exits_1(server_cmd: list[str], model_dir_factory, tmp_path: Path) -> None:
    broken = model_dir_factory(tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    code, stderr = _run_to_exit(server_cmd, broken)
    assert code == 1 and "server failed" in stderr
