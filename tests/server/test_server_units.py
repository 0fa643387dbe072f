"""In-process unit tests: raw BYTES codec, batch splitting, the dynamic batcher, request parsing,
settings and the ONNX/tokenizer wrapper."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2, service_pb2

from sentclf_server.batcher import BatcherStopped, DynamicBatcher, RequestCancelled, split_rows
from sentclf_server.codec import CodecError, decode_bytes_tensor, encode_bytes_tensor
from sentclf_server.config import ConfigError, load_settings
from sentclf_server.model import plan_buckets
from sentclf_server.outputs import encode_outputs, output_metadata
from sentclf_server.service import (
    RequestError,
    build_response,
    model_config,
    parse_text_input,
    requested_outputs,
)

# --- raw BYTES codec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [[b"hello"], [b"", b"x", b""], ["héllo wörld ✓".encode(), b"\x00\x01" * 300], []],
)
def test_codec_round_trip(items: list[bytes]) -> None:
    raw = encode_bytes_tensor(items)
    assert len(raw) == sum(4 + len(i) for i in items)
    assert decode_bytes_tensor(raw) == items


def test_codec_layout_is_little_endian_length_prefix() -> None:
    assert encode_bytes_tensor([b"ab", b"c"]) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"\x05\x00", "truncated length prefix"), (b"\x05\x00\x00\x00abc", "declares 5 bytes but only 3")],
)
def test_codec_rejects_truncated_data(raw: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_bytes_tensor(raw)


# --- batch splitting and the dynamic batcher -------------------------------------------------------


def test_split_rows_returns_slices_in_order() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    parts = split_rows(rows, [1, 3, 2])
    assert [p.shape for p in parts] == [(1, 2), (3, 2), (2, 2)]
    np.testing.assert_array_equal(np.concatenate(parts), rows)
    np.testing.assert_array_equal(parts[1], rows[1:4])
    with pytest.raises(ValueError, match="do not add up"):
        split_rows(rows, [2, 2])


class FakeModel:
    """Rows encode the sentence (its number) so each caller can check it got its own results back."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.batches.append(list(texts))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("boom")
        values = np.array([float(t) for t in texts], dtype=np.float32)
        return np.stack([values, -values], axis=1)


def run_batcher(
    model: FakeModel, requests: list[list[str]], stagger_s: float = 0.0, **kwargs
) -> list[object]:
    """Submit each request from its own thread (as gRPC handler threads do) to a fresh batcher; returns
    the results (or exceptions) in request order."""
    batcher = DynamicBatcher(model, **kwargs)
    results: list[object] = [None] * len(requests)

    def call(index: int) -> None:
        try:
            results[index] = batcher.submit(requests[index])
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
        time.sleep(stagger_s)
    for thread in threads:
        thread.join(timeout=30)
    batcher.stop()
    return results


def test_batcher_merges_concurrent_requests_and_splits_results() -> None:
    model = FakeModel(delay_s=0.05)
    requests = [[str(i)] for i in range(10)] + [["100", "101", "102"]]
    results = run_batcher(model, requests, max_batch_size=32, max_delay_s=0.002)
    for request, result in zip(requests, results, strict=True):
        expected = np.array([[float(t), -float(t)] for t in request], dtype=np.float32)
        np.testing.assert_array_equal(result, expected)
    # The first request runs at once; the others queue behind it and run together.
    assert len(model.batches) < len(requests)
    assert max(len(b) for b in model.batches) > 1
    assert sorted(t for b in model.batches for t in b) == sorted(t for r in requests for t in r)


def test_batcher_respects_max_batch_size_and_never_splits_a_request() -> None:
    model = FakeModel(delay_s=0.01)
    requests = [["1", "2", "3"]] * 5 + [[str(i) for i in range(10, 20)]]  # 10 > max: runs alone
    results = run_batcher(model, requests, max_batch_size=7, max_delay_s=0.002)
    assert all(isinstance(r, np.ndarray) for r in results)
    for batch in model.batches:
        assert len(batch) <= 7 or batch == requests[-1]
    assert requests[-1] in model.batches


def test_batcher_idle_single_request_does_not_wait_for_the_delay() -> None:
    model = FakeModel()
    started = time.perf_counter()
    (result,) = run_batcher(model, [["7"]], max_batch_size=32, max_delay_s=5.0)
    assert time.perf_counter() - started < 2.0  # would be >= 5 s if an idle batcher slept the delay
    np.testing.assert_array_equal(result, [[7.0, -7.0]])


def test_batcher_failure_reaches_every_waiter() -> None:
    results = run_batcher(FakeModel(fail=True), [["1"], ["2"]], max_batch_size=32, max_delay_s=0.002)
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)


def test_batcher_fails_only_the_request_that_breaks_the_model() -> None:
    """A batch that fails is run again one request at a time: the poisoned request (text the fake model
    cannot read) fails alone, its batch-mates are answered."""
    model = FakeModel(delay_s=0.02)
    requests = [["1"], ["2", "3"], ["poison"], ["4"], ["5", "6"], ["poison", "7"], ["8"]]
    results = run_batcher(model, requests, max_batch_size=32, max_delay_s=0.01)
    for request, result in zip(requests, results, strict=True):
        if any(text == "poison" for text in request):
            assert isinstance(result, ValueError), result
        else:
            expected = np.array([[float(t), -float(t)] for t in request], dtype=np.float32)
            np.testing.assert_array_equal(result, expected)
    shared = [b for b in model.batches if "poison" in b and len(b) > 2]
    assert shared, model.batches  # the poison did share a batch with good requests


def test_rate_limited_log_writes_a_burst_then_counts() -> None:
    from sentclf_server.refusals import RateLimitedLog

    lines: list[str] = []

    class Sink:
        def log(self, level: int, message: str, *args: object, exc_info: bool = False) -> None:
            lines.append(message % args)

    now = [0.0]
    limited = RateLimitedLog(Sink(), per_second=1.0, burst=3, clock=lambda: now[0])
    written = [limited.log(20, "refused %d", i) for i in range(10)]
    assert written == [True] * 3 + [False] * 7
    now[0] = 1.0
    assert limited.log(20, "refused %d", 10)
    assert lines[-1] == "refused 10 (7 more lines like this suppressed)"


class GatedModel(FakeModel):
    """The first call blocks until `release` is set; counts how many calls run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.calls = self.active = self.peak = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            first = self.calls == 0
            self.calls += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if first:
                assert self.release.wait(10)
            return super().__call__(texts)
        finally:
            with self.lock:
                self.active -= 1


def _submit_in_thread(batcher: DynamicBatcher, texts: list[str], **kwargs) -> tuple[threading.Thread, list]:
    outcome: list = []

    def call() -> None:
        try:
            outcome.append(batcher.submit(texts, **kwargs))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize("slots", [1, 2])
def test_batcher_runs_a_second_batch_beside_a_busy_one_only_with_two_slots(slots: int) -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=32, max_delay_s=0.01, max_concurrent=slots)
    first, first_out = _submit_in_thread(batcher, ["1"])
    _wait_for(lambda: model.active == 1)  # "1" is running, held by the gate
    second, second_out = _submit_in_thread(batcher, ["2"])
    # With two slots "2" answers (however slow the machine); with one it still waits for "1" after 0.5 s.
    second.join(timeout=10.0 if slots == 2 else 0.5)
    assert (second_out != []) is (slots == 2)
    model.release.set()
    for thread in (first, second):
        thread.join(timeout=10)
    assert [o.tolist() for o in first_out + second_out] == [[[1.0, -1.0]], [[2.0, -2.0]]]
    assert model.peak == slots


def test_batcher_skips_cancelled_requests_and_refuses_after_stop() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=32, max_delay_s=0.0, max_concurrent=1)
    first, first_out = _submit_in_thread(batcher, ["1"])
    _wait_for(lambda: model.active == 1)  # "1" is running; the next two queue behind it
    cancels: list = []
    doomed, doomed_out = _submit_in_thread(
        batcher, ["2"], on_cancel=lambda callback: cancels.append(callback) or True
    )
    _wait_for(lambda: cancels != [])
    kept, kept_out = _submit_in_thread(batcher, ["3"])
    time.sleep(0.05)
    cancels[0]()  # the caller of "2" went away (grpc runs the context's callbacks)
    doomed.join(timeout=5)
    assert isinstance(doomed_out[0], RequestCancelled)
    model.release.set()
    for thread in (first, kept):
        thread.join(timeout=10)
    assert kept_out[0].tolist() == [[3.0, -3.0]] and first_out[0].tolist() == [[1.0, -1.0]]
    assert model.batches == [["1"], ["3"]]
    batcher.stop()
    with pytest.raises(BatcherStopped):
        batcher.submit(["4"])


def test_batcher_stop_fails_queued_requests() -> None:
    model = GatedModel()
    batcher = DynamicBatcher(model, max_batch_size=1, max_delay_s=0.0, max_concurrent=1)
    first, first_out = _submit_in_thread(batcher, ["1"])
    _wait_for(lambda: model.active == 1)
    queued, queued_out = _submit_in_thread(batcher, ["2"])
    time.sleep(0.05)
    batcher.stop()
    queued.join(timeout=5)
    assert isinstance(queued_out[0], BatcherStopped)
    model.release.set()
    first.join(timeout=5)
    assert first_out[0].tolist() == [[1.0, -1.0]]  # a running batch finishes


# --- length buckets --------------------------------------------------------------------------------


def _cost(lengths: list[int], buckets: list[tuple[int, int]], run_cost: float) -> float:
    return sum(run_cost + (end - start) * lengths[end - 1] for start, end in buckets)


@pytest.mark.parametrize("run_cost", [0.0, 3.0, 8.0, 1000.0])
def test_plan_buckets_is_optimal_contiguous_and_bounded(run_cost: float) -> None:
    lengths = sorted([5, 6, 6, 7, 9, 12, 13, 13, 20, 31, 32, 40])
    buckets = plan_buckets(lengths, max_rows=5, run_cost_tokens=run_cost)
    assert buckets[0][0] == 0 and buckets[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(buckets))
    assert all(0 < end - start <= 5 for start, end in buckets)
    # Brute force over every way to cut the sorted list into runs of at most 5 rows.
    best = min(
        _cost(lengths, list(itertools.pairwise((0, *cuts, len(lengths)))), run_cost)
        for k in range(len(lengths))
        for cuts in itertools.combinations(range(1, len(lengths)), k)
        if all(0 < b - a <= 5 for a, b in itertools.pairwise((0, *cuts, len(lengths))))
    )
    assert _cost(lengths, buckets, run_cost) == pytest.approx(best)
    if run_cost == 1000.0:
        assert len(buckets) == 3  # as few runs as max_rows allows


def test_plan_buckets_edge_cases() -> None:
    assert plan_buckets([], 4, 8.0) == []
    assert plan_buckets([7], 4, 8.0) == [(0, 1)]
    assert plan_buckets([3, 3, 3, 3], 4, 0.0) == [(0, 4)]  # a tie goes to fewer runs
    assert plan_buckets([3, 3, 3, 3, 3], 2, 100.0) == [(0, 1), (1, 3), (3, 5)]


# --- request parsing ---------------------------------------------------------------------------------


def _request(items: list[bytes], raw: bool, **tensor: object) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="cola")
    spec = {"name": "text", "datatype": "BYTES", "shape": [len(items)], **tensor}
    tensor_pb = request.inputs.add(**spec)
    if raw:
        request.raw_input_contents.append(encode_bytes_tensor(items))
    else:
        tensor_pb.contents.bytes_contents.extend(items)
    return request


@pytest.mark.parametrize("raw", [True, False])
def test_parse_text_input_accepts_raw_and_typed(raw: bool) -> None:
    sentences = ["the cat", "héllo", ""]
    assert parse_text_input(_request([s.encode() for s in sentences], raw), 8) == sentences


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_request([b"a"], True, datatype="FP32"), "must be BYTES"),
        (_request([b"a"], True, shape=[1, 1]), r"shape \[batch\]"),
        (_request([b"a", b"b"], True, shape=[3]), r"shape \[3\] but 2 elements"),
        (_request([b"\xc3\x28"], False), "element 0 is not valid UTF-8"),
        (_request([b"a"] * 9, True), "exceeds MAX_REQUEST_BATCH=8"),
    ],
)
def test_parse_text_input_rejects(request_: service_pb2.ModelInferRequest, message: str) -> None:
    with pytest.raises(RequestError, match=message) as info:
        parse_text_input(request_, 8)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_requested_outputs_default_and_validation() -> None:
    request = service_pb2.ModelInferRequest()
    assert requested_outputs(request) == ["label", "probabilities", "label_name"]
    request.outputs.add(name="probabilities")
    assert requested_outputs(request) == ["probabilities"]
    request.outputs.add(name="label_name")
    assert requested_outputs(request) == ["probabilities", "label_name"]
    request.outputs.add(name="logits")
    with pytest.raises(RequestError, match="unknown output 'logits'"):
        requested_outputs(request)
    repeated = service_pb2.ModelInferRequest()
    repeated.outputs.add(name="probabilities")
    repeated.outputs.add(name="probabilities")
    with pytest.raises(RequestError, match="'probabilities' requested twice") as info:
        requested_outputs(repeated)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_parse_text_input_takes_an_empty_batch() -> None:
    assert parse_text_input(_request([], False), 8) == []


# --- outputs: label, probabilities, label_name ------------------------------------------------------

TICKETS = ("billing", "refund", "login", "other")
LABEL_SETS = {
    "binary": ("unacceptable", "acceptable"),
    "4 classes": TICKETS,
    "50 classes": tuple(f"class {i:02d} ✓" for i in range(50)),  # non-ASCII names: UTF-8 bytes
}


def _decode_outputs(response: service_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    """What tritonclient's as_numpy gives for each raw output (BYTES as str)."""
    arrays = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if output.datatype == "BYTES":
            array = np.array([item.decode() for item in decode_bytes_tensor(raw)], dtype=object)
        else:
            array = np.frombuffer(raw, dtype={"INT64": "<i8", "FP32": "<f4"}[output.datatype])
        arrays[output.name] = array.reshape(list(output.shape))
    return arrays


def with_labels(settings, labels):
    """The same settings, for a model whose serving config names these classes."""
    return dataclasses.replace(settings, serving=dataclasses.replace(settings.serving, labels=tuple(labels)))


@pytest.mark.parametrize("label_set", list(LABEL_SETS))
def test_outputs_name_the_class_of_each_row(label_set: str, model_dir: Path) -> None:
    labels = LABEL_SETS[label_set]
    rng = np.random.default_rng(len(labels))
    probs = rng.dirichlet(np.ones(len(labels)), size=300).astype(np.float32)
    settings = with_labels(load_settings({"MODEL_DIR": str(model_dir)}), labels)
    request = service_pb2.ModelInferRequest(id="r1")
    response = build_response(request, settings, probs, requested_outputs(request))
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "INT64", [300]),
        ("probabilities", "FP32", [300, len(labels)]),
        ("label_name", "BYTES", [300]),
    ]
    arrays = _decode_outputs(response)
    np.testing.assert_array_equal(arrays["label"], probs.argmax(axis=1))
    np.testing.assert_array_equal(arrays["probabilities"], probs)
    assert arrays["label_name"].tolist() == [labels[i] for i in arrays["label"]]
    if len(labels) <= 4:
        assert set(arrays["label_name"]) == set(labels)  # every class is named somewhere


def test_outputs_are_the_requested_ones_in_request_order() -> None:
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32)
    only_name = encode_outputs(probs, TICKETS, ["label_name"])
    assert [(o.name, o.shape) for o in only_name] == [("label_name", (2,))]
    assert decode_bytes_tensor(only_name[0].raw) == [b"other", b"billing"]
    assert [o.name for o in encode_outputs(probs, TICKETS, ["probabilities", "label"])] == [
        "probabilities",
        "label",
    ]
    assert encode_outputs(probs, TICKETS, []) == []
    with pytest.raises(ValueError, match="for 2 classes"):
        encode_outputs(probs, ("a", "b"), ["label"])


def test_output_metadata_and_model_config_list_the_classes_in_order(model_dir: Path) -> None:
    assert output_metadata(50) == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 50]),
        ("label_name", "BYTES", [-1]),
    ]
    settings = with_labels(load_settings({"MODEL_DIR": str(model_dir)}), TICKETS)
    config = model_config(settings)
    assert json.loads(config.parameters["label_names"].string_value) == list(TICKETS)
    assert (config.name, config.platform, config.max_batch_size) == ("cola", "onnxruntime_onnx", 0)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("text", model_config_pb2.TYPE_STRING, [-1])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("label", model_config_pb2.TYPE_INT64, [-1]),
        ("probabilities", model_config_pb2.TYPE_FP32, [-1, 4]),
        ("label_name", model_config_pb2.TYPE_STRING, [-1]),
    ]


# --- settings ----------------------------------------------------------------------------------------


def test_settings_defaults_and_env_overrides(model_dir: Path) -> None:
    settings = load_settings({"MODEL_DIR": str(model_dir)})
    assert (settings.model_name, settings.model_version) == ("cola", "1")
    assert (settings.grpc_port, settings.metrics_port, settings.bind_address) == (8001, 8002, "0.0.0.0")
    assert (settings.max_batch_size, settings.max_batch_delay_s) == (32, 0.002)
    assert settings.max_message_bytes == 4 * 1024 * 1024
    assert settings.labels == ("unacceptable", "acceptable")
    overrides = {"MODEL_NAME": "other", "MODEL_VERSION": "7", "MAX_BATCH_DELAY_MS": "0"}
    settings = load_settings({"MODEL_DIR": str(model_dir), **overrides})
    assert (settings.model_name, settings.model_version, settings.max_batch_delay_s) == ("other", "7", 0.0)


def test_settings_labels_from_the_config_or_the_binary_default(tmp_path: Path, model_dir_factory) -> None:
    tickets = model_dir_factory(tmp_path / "tickets", labels=TICKETS)
    assert load_settings({"MODEL_DIR": str(tickets)}).labels == TICKETS
    # A serving_config.json from before the label set was data: no `labels`, a CoLA model.
    old = model_dir_factory(tmp_path / "old", labels=None)
    assert "labels" not in json.loads((old / "serving_config.json").read_text())
    assert load_settings({"MODEL_DIR": str(old)}).labels == ("unacceptable", "acceptable")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["only"], "at least two strings"),
        ("ab", "at least two strings"),
        (["a", 1], "at least two strings"),
        (["billing", "refund", "billing"], r"repeat \['billing'\]"),
    ],
)
def test_settings_reject_bad_labels(tmp_path: Path, labels: object, message: str) -> None:
    (tmp_path / "serving_config.json").write_text(json.dumps({"labels": labels}))
    with pytest.raises(ConfigError, match=message):
        load_settings({"MODEL_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORT_GRAPH_OPTIMIZATION": "max"}, "ORT_GRAPH_OPTIMIZATION must be one of"),
        ({"MAX_BATCH_SIZE": "0"}, "MAX_BATCH_SIZE must be >= 1"),
        ({"GRPC_PORT": "eighty"}, "GRPC_PORT must be an integer"),
        ({"MODEL_DIR": "/nonexistent"}, "missing /nonexistent/serving_config.json"),
    ],
)
def test_settings_reject_bad_values(model_dir: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"MODEL_DIR": str(model_dir), **env})


# --- model wrapper -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bucketing", [True, False])
@pytest.mark.parametrize("with_token_type_ids", [True, False])
def test_classifier_feeds_declared_inputs_and_matches_reference(
    tmp_path: Path, with_token_type_ids: bool, bucketing: bool, model_dir_factory, reference_probs, limits
) -> None:
    from sentclf_server.model import SentenceClassifier

    directory = model_dir_factory(tmp_path / "m", with_token_type_ids=with_token_type_ids)
    env = {"MODEL_DIR": str(directory), "MAX_BATCH_SIZE": "2", "LENGTH_BUCKETING": str(int(bucketing))}
    stats = []
    model = SentenceClassifier(load_settings(env), observer=stats.append)
    long_sentence = " ".join(["the cat sat on the mat"] * 20)  # longer than max_seq_length: truncated
    sentences = ["the cat sat", "dog", "colorless green ideas sleep furiously", long_sentence, "zzz unknown"]
    probs = model.predict(sentences)  # 5 sentences > MAX_BATCH_SIZE=2: at least 3 runs
    assert probs.dtype == np.float32 and probs.shape == (5, 2)
    np.testing.assert_allclose(probs, reference_probs(directory / "tokenizer.json", sentences), atol=1e-5)
    assert len(model.tokenizer.encode(long_sentence).ids) == limits.max_seq_length
    (batch,) = stats
    assert (batch.sentences, batch.tokens) == (5, 5 + 3 + 7 + 16 + 4)
    assert batch.runs >= 3 and batch.padded_tokens >= batch.tokens


def test_length_buckets_keep_request_order_and_cut_padding(model_dir: Path, reference_probs) -> None:
    from sentclf_server.model import SentenceClassifier

    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "very", "good", "book"]
    sentences = [" ".join(rng.choice(words, size=rng.integers(1, 14))) for _ in range(40)]
    expected = reference_probs(model_dir / "tokenizer.json", sentences)
    padded = {}
    for bucketing in (False, True):
        stats = []
        env = {"MODEL_DIR": str(model_dir), "MAX_BATCH_SIZE": "64", "LENGTH_BUCKETING": str(int(bucketing))}
        model = SentenceClassifier(load_settings(env), observer=stats.append)
        model.run_cost_tokens = 8.0
        np.testing.assert_allclose(model.predict(sentences), expected, atol=1e-5)  # rows in request order
        padded[bucketing] = stats[0].padded_tokens - stats[0].tokens
        assert stats[0].runs == (1 if not bucketing else stats[0].runs)
    assert padded[True] < padded[False] / 2


def test_run_cost_calibration_is_bounded(model_dir: Path) -> None:
    from sentclf_server.model import RUN_COST_BOUNDS, SentenceClassifier

    model = SentenceClassifier(load_settings({"MODEL_DIR": str(model_dir)}))
    model.warm_up()
    low, high = RUN_COST_BOUNDS
    assert low <= model.run_cost_tokens <= high


def test_infer_before_the_model_is_loaded_is_unavailable(model_dir: Path) -> None:
    from sentclf_server.service import InferenceServicer, ServerState

    servicer = InferenceServicer(ServerState(load_settings({"MODEL_DIR": str(model_dir)})))
    request = _request([b"dog"], raw=True)
    with pytest.raises(RequestError, match="still loading") as info:
        servicer._infer(request)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("num_classes", [4, 50])
def test_multi_class_model_answers_names(
    tmp_path: Path, num_classes: int, model_dir_factory, reference_probs
) -> None:
    from sentclf_server.model import SentenceClassifier

    labels = TICKETS if num_classes == 4 else LABEL_SETS["50 classes"]
    directory = model_dir_factory(tmp_path / "m", labels=labels)
    settings = load_settings({"MODEL_DIR": str(directory)})
    model = SentenceClassifier(settings)
    model.warm_up()  # checks the logits' width against the labels
    sentences = ["the cat sat on the mat", "they read quickly", "it was very good", "slowly slowly slowly"]
    probs = model.predict(sentences)
    assert probs.shape == (4, num_classes)
    # 50 classes: logits of a few hundred that differ by tenths, so float32 keeps about 1e-5 of them
    np.testing.assert_allclose(probs, reference_probs(directory / "tokenizer.json", sentences), atol=1e-4)
    request = service_pb2.ModelInferRequest()
    arrays = _decode_outputs(build_response(request, settings, probs, requested_outputs(request)))
    assert arrays["probabilities"].shape == (4, num_classes)
    assert arrays["label_name"].tolist() == [labels[i] for i in probs.argmax(axis=1)]
    assert len(set(arrays["label_name"])) >= 3  # the fixture model really tells these sentences apart


def test_model_with_fewer_logits_than_labels_is_refused(tmp_path: Path, model_dir_factory) -> None:
    from sentclf_server.model import ModelError, SentenceClassifier

    directory = model_dir_factory(tmp_path / "m", labels=TICKETS)
    config = json.loads((directory / "serving_config.json").read_text())
    (directory / "serving_config.json").write_text(json.dumps({**config, "labels": [*TICKETS, "spam"]}))
    model = SentenceClassifier(load_settings({"MODEL_DIR": str(directory)}))
    with pytest.raises(ModelError, match=r"expected \[batch, 5\]"):
        model.warm_up()
