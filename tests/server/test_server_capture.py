"""Traffic capture (CAPTURE_DIR): off the request path, bounded, for gRPC and HTTP alike, never an error to
the caller; the capture's features equal the monitor's."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tokenizers import Tokenizer

SENTENCES = ["the cat sat on the mat", "colorless green ideas sleep furiously", "der Hund schläft"]


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("capture-*.jsonl")) for line in path.open()]


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def grpc_infer(server, sentences: list[str]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.url)
    text = grpcclient.InferInput("text", [len(sentences)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=object))
    return client.infer("cola", [text]).as_numpy("probabilities")


def http_infer(server, sentences: list[str]) -> dict:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(sentences)], "data": sentences}]}
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/cola/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def metric(server, name: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{")
    }


def capture_outcomes(server) -> dict[str, float]:
    found = metric(server, "sentclf_capture_records_total")
    return {key.split('outcome="')[1].split('"')[0]: value for key, value in found.items()}


def test_capture_writes_grpc_and_http_requests(model_dir, server_factory, reference_probs, tmp_path):
    folder = tmp_path / "traffic"
    folder.mkdir()
    server = server_factory(model_dir, tmp_path / "server.log", CAPTURE_DIR=str(folder))
    try:
        probs = grpc_infer(server, SENTENCES)
        http_infer(server, SENTENCES[:1])
        wait_for(lambda: len(records(folder)) == 4)
        assert capture_outcomes(server) == {"captured": 4.0, "dropped": 0.0, "error": 0.0}
    finally:
        assert server.stop() == 0
    got = records(folder)
    assert [r["text"] for r in got] == [*SENTENCES, SENTENCES[0]]
    first = got[0]
    assert set(first) == {
        *("time", "model", "version", "id", "index", "served", "route"),
        *("label", "label_name", "probabilities", "chars"),
        *("tokens", "words", "oov_words", "truncated", "text"),
    }
    assert (first["model"], first["version"], first["chars"]) == ("cola", "1", len(SENTENCES[0]))
    # one request id per request (generated: none was sent), each sentence its position, all served
    assert [r["index"] for r in got] == [0, 1, 2, 0]
    assert len({r["id"] for r in got[:3]}) == 1 and got[3]["id"] != got[0]["id"] and len(got[0]["id"]) == 32
    assert {(r["served"], r["route"]) for r in got} == {(True, "champion")}
    assert (first["tokens"], first["words"], first["oov_words"]) == (6, 6, 0)
    assert got[2]["oov_words"] == 3  # none of the German words is in the fixture's vocabulary
    assert np.allclose([r["probabilities"] for r in got[:3]], probs, atol=1e-5)
    assert first["label_name"] == ("unacceptable", "acceptable")[first["label"]]


def test_capture_text_false_stores_a_hash_and_the_features(model_dir, server_factory, tmp_path):
    folder = tmp_path / "traffic"
    folder.mkdir()
    server = server_factory(model_dir, tmp_path / "server.log", CAPTURE_DIR=str(folder), CAPTURE_TEXT="false")
    try:
        grpc_infer(server, SENTENCES[:2])
        wait_for(lambda: len(records(folder)) == 2)
    finally:
        assert server.stop() == 0
    got = records(folder)
    assert all("text" not in r for r in got)
    assert got[0]["sha256"] == hashlib.sha256(SENTENCES[0].encode()).hexdigest()
    assert got[1]["tokens"] == 5


def test_nothing_is_captured_without_capture_dir(model_dir, server_factory, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = server_factory(model_dir, tmp_path / "server.log")
    try:
        grpc_infer(server, SENTENCES)
        http_infer(server, SENTENCES)
        assert capture_outcomes(server) == {}
    finally:
        assert server.stop() == 0
    assert "capture on" not in server.log()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.log"]


def test_an_unwritable_folder_is_a_warning_and_a_metric_not_an_error(model_dir, server_factory, tmp_path):
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "traffic"  # cannot be written, even by root
    server = server_factory(model_dir, tmp_path / "server.log", CAPTURE_DIR=str(folder))
    try:
        for _ in range(3):
            assert grpc_infer(server, SENTENCES).shape == (3, 2)
            assert len(http_infer(server, SENTENCES)["outputs"]) == 3
        wait_for(lambda: capture_outcomes(server).get("error") == 18.0)
    finally:
        assert server.stop() == 0
    assert "WARNING" in server.log() and "capture: cannot write to" in server.log()
    assert server.log().count("capture: cannot write to") == 1  # at most one warning a minute


def test_capture_files_stay_within_capture_max_mb(model_dir, server_factory, tmp_path):
    folder = tmp_path / "traffic"
    folder.mkdir()
    (folder / "capture-20000101T000000000000Z-old-1-1.jsonl").write_bytes(
        b"x" * 30_000
    )  # an earlier server's
    limit_mb = 0.02  # 20 971 bytes: about 80 records of ~250 bytes
    server = server_factory(
        model_dir, tmp_path / "server.log", CAPTURE_DIR=str(folder), CAPTURE_MAX_MB=str(limit_mb)
    )
    try:
        for _ in range(100):
            grpc_infer(server, SENTENCES)
        wait_for(lambda: capture_outcomes(server).get("captured") == 300.0)
    finally:
        assert server.stop() == 0
    files = sorted(folder.glob("capture-*.jsonl"))
    assert sum(p.stat().st_size for p in files) <= limit_mb * 1024 * 1024
    assert len(files) >= 6  # rotated, the oldest deleted (the earlier server's first)
    assert not (folder / "capture-20000101T000000000000Z-old-1-1.jsonl").exists()
    assert records(folder)[-1]["text"] == SENTENCES[-1]


def test_a_full_queue_drops_and_counts_and_never_blocks(model_dir, tmp_path):
    from sentclf_server.capture import Capture, CaptureSettings

    capture = Capture(
        CaptureSettings(tmp_path, 1.0, 1024 * 1024, True),
        "cola",
        "1",
        ("no", "yes"),
        model_dir / "tokenizer.json",
        256,
        queue_requests=2,
        start=False,  # the writer starts after the offers: the queue fills up
    )
    began = time.perf_counter()
    for _ in range(200):
        capture.offer(["a"], np.array([[0.4, 0.6]], dtype=np.float32))
    assert time.perf_counter() - began < 0.5
    capture.start()
    capture.close()
    assert (capture.counters.captured.value, capture.counters.dropped.value) == (2, 198)
    assert len(records(tmp_path)) == 2


@pytest.mark.parametrize(
    "text",
    ["the cat sat on the mat", "", "Der Hund schläft auf der Matte", "it's a  green-ideas book!!"],
)
def test_the_capture_counts_features_as_the_monitor_does(model_dir, text):
    """One function (the runtime's) for both, and its counts are what the words say."""
    from sentclf.traffic import text_features as monitor_features
    from sentclf_server.capture import text_features as server_features

    assert server_features is monitor_features
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ((tokens, words, oov),) = server_features(tokenizer, [text])
    assert 0 <= oov <= words <= tokens
    if text == "the cat sat on the mat":  # every word in the test vocabulary, one token each
        assert (tokens, words, oov) == (6, 6, 0)
