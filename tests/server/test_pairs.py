"""Sentence-pair models (sentclf_runtime.pairs): the serving config names the second input; the runtime's
scorer encodes each pair with the tokenizer's pair template, truncating longest-first; the pyfunc takes a
two-column frame; the server (a real process, tritonclient as the client) names both inputs in its
metadata and answers them over gRPC and HTTP, and refuses a request without the second input or with
another length as INVALID_ARGUMENT / 400 for that request alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from sentclf.data import model_inputs
from sentclf.text_model import TextClassifier
from sentclf_runtime.config import ServingConfig
from sentclf_runtime.pairs import (
    PAIR_INPUT_KEY,
    TEXT_PAIR_INPUT,
    PairError,
    joined_texts,
    pair_input,
    split_items,
    with_pair_input,
)
from sentclf_runtime.scorer import Scorer

from pyfunc_model import log_text_model

MODEL = "pairs"
FIRST = ["the cat sat on the mat", "is it good", "they read quickly", "a dog ran"]
SECOND = ["a cat sat on a mat", "is it bad", "she reads the book very slowly on the table", "a dog ran"]


@pytest.fixture(scope="module")
def pairs_model_dir(model_dir_factory, tmp_path_factory) -> Path:
    """The fixture model (it reads token_type_ids, so the second segment changes the answer) with a
    serving config that says it takes pairs."""
    path = model_dir_factory(tmp_path_factory.mktemp("pairs_model"), model_name=MODEL)
    config = with_pair_input(ServingConfig.read(path))
    config.write(path)
    return path


def reference(model_dir: Path, firsts: list[str], seconds: list[str], max_seq_length: int) -> np.ndarray:
    """The fixture model by hand: features [mean id, tokens + second-segment tokens] of each pair
    encoded together and truncated longest-first (weights of the two-class head in conftest)."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_seq_length, strategy="longest_first")
    rows = []
    for encoding in tokenizer.encode_batch(list(zip(firsts, seconds, strict=True))):
        ids = np.array(encoding.ids, dtype=np.float64)
        rows.append([ids.mean(), len(ids) + sum(encoding.type_ids)])
    logits = np.array(rows) @ np.array([[0.25, -0.25], [-0.3, 0.3]]) + np.array([0.5, -0.5])
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_the_serving_config_says_pairs_and_a_rewrite_keeps_it(pairs_model_dir: Path) -> None:
    config = ServingConfig.read(pairs_model_dir)
    written = json.loads((pairs_model_dir / "serving_config.json").read_text())
    assert written[PAIR_INPUT_KEY] == TEXT_PAIR_INPUT
    assert pair_input(config) == TEXT_PAIR_INPUT
    assert pair_input(config.served_as("other", "7")) == TEXT_PAIR_INPUT  # building's rewrite
    assert pair_input(with_pair_input(config, None)) is None


def test_the_scorer_reads_each_pair_together_and_keeps_both_sides(pairs_model_dir: Path, limits) -> None:
    scorer = Scorer.from_dir(pairs_model_dir)
    probs = scorer.predict(FIRST, SECOND)
    expected = reference(pairs_model_dir, FIRST, SECOND, limits.max_seq_length)
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    # Items already paired (what the server's batcher hands on) give the very same numbers.
    np.testing.assert_array_equal(scorer.predict(list(zip(FIRST, SECOND, strict=True))), probs)
    # The second text counts: a pair answers otherwise than its first text alone.
    assert not np.allclose(probs, scorer.predict(FIRST))
    # Longest-first truncation: a long second text does not push the first one out.
    long_second = " ".join(["slowly"] * 40)
    (encoding,) = scorer.tokenizer.encode_batch_fast([("the cat sat on the mat", long_second)])
    assert len(encoding.ids) == limits.max_seq_length
    assert encoding.type_ids.count(0) >= 1 + 6 + 1  # [CLS], the whole first text, [SEP]


def test_the_pyfunc_takes_a_two_column_frame(pairs_model_dir: Path, tracking_store, limits) -> None:
    files = [pairs_model_dir / name for name in ("model.onnx", "tokenizer.json", "serving_config.json")]
    with mlflow.start_run():
        info = log_text_model(*files, registered_model_name="pairs-pyfunc")
    model = mlflow.pyfunc.load_model(f"models:/pairs-pyfunc/{info.registered_model_version}")
    assert [spec.name for spec in model.metadata.get_input_schema().inputs] == ["text", TEXT_PAIR_INPUT]
    answer = model.predict(pd.DataFrame({"text": FIRST, TEXT_PAIR_INPUT: SECOND}))
    probabilities = np.stack(answer["probabilities"].to_numpy())
    np.testing.assert_array_equal(probabilities, Scorer.from_dir(pairs_model_dir).predict(FIRST, SECOND))
    classifier = TextClassifier.from_dir(pairs_model_dir)
    with pytest.raises(PairError, match="sentence pairs"):
        classifier.score(FIRST)
    with pytest.raises(PairError, match="has 4 element"):
        classifier.score(FIRST, SECOND[:2])


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pairs_capture")


@pytest.fixture(scope="module")
def pairs_server(
    server_factory, pairs_model_dir: Path, tmp_path_factory, capture_dir: Path
) -> Iterator[object]:
    log = tmp_path_factory.mktemp("pairs_log") / "server.log"
    server = server_factory(pairs_model_dir, log, CAPTURE_DIR=str(capture_dir))
    try:
        yield server
    finally:
        server.stop()


def grpc_inputs(named: dict[str, list[str]]) -> list[triton.InferInput]:
    tensors = []
    for name, values in named.items():
        tensor = triton.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array(values, dtype=object))
        tensors.append(tensor)
    return tensors


def http_inputs(named: dict[str, list[str]], binary: bool) -> list[triton_http.InferInput]:
    tensors = []
    for name, values in named.items():
        tensor = triton_http.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
        tensors.append(tensor)
    return tensors


def test_the_server_names_both_inputs_and_answers_pairs_over_grpc_and_http(
    pairs_server, pairs_model_dir: Path, limits
) -> None:
    expected = reference(pairs_model_dir, FIRST, SECOND, limits.max_seq_length)
    names = [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    names.append({"name": TEXT_PAIR_INPUT, "datatype": "BYTES", "shape": ["-1"]})
    with triton.InferenceServerClient(pairs_server.url) as client:
        assert client.get_model_metadata(MODEL, as_json=True)["inputs"] == names
        config = client.get_model_config(MODEL, as_json=True)["config"]
        assert [tensor["name"] for tensor in config["input"]] == ["text", TEXT_PAIR_INPUT]
        result = client.infer(MODEL, grpc_inputs({"text": FIRST, TEXT_PAIR_INPUT: SECOND}))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
    with triton_http.InferenceServerClient(pairs_server.http_url) as client:
        metadata = client.get_model_metadata(MODEL)
        assert [tensor["name"] for tensor in metadata["inputs"]] == ["text", TEXT_PAIR_INPUT]
        for binary in (True, False):
            result = client.infer(MODEL, http_inputs({"text": FIRST, TEXT_PAIR_INPUT: SECOND}, binary))
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
            assert result.as_numpy("label").shape == (len(FIRST),)


@pytest.mark.parametrize(
    "named, message",
    [
        ({"text": FIRST}, f"missing input(s) ['{TEXT_PAIR_INPUT}']"),
        ({"text": FIRST, TEXT_PAIR_INPUT: SECOND[:3]}, f"but '{TEXT_PAIR_INPUT}' has 3"),
    ],
    ids=["missing-second-input", "other-length"],
)
def test_a_request_that_does_not_fit_a_pairs_model_is_refused_alone(
    pairs_server, pairs_model_dir: Path, limits, named: dict, message: str
) -> None:
    good = {"text": FIRST, TEXT_PAIR_INPUT: SECOND}
    with triton.InferenceServerClient(pairs_server.url) as client:
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, grpc_inputs(named))
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert message in refused.value.message()
        assert client.infer(MODEL, grpc_inputs(good)).as_numpy("label").shape == (len(FIRST),)
    with triton_http.InferenceServerClient(pairs_server.http_url) as client:
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, http_inputs(named, binary=True))
        assert refused.value.status() == "400"
        assert message in refused.value.message()
        assert client.infer(MODEL, http_inputs(good, binary=True)).as_numpy("label").shape == (len(FIRST),)


def test_the_capture_keeps_each_pair_as_one_text(pairs_server, capture_dir: Path) -> None:
    """What the monitor compares with the training pairs, joined the same way (sentclf.data.model_inputs)."""
    with triton.InferenceServerClient(pairs_server.url) as client:
        client.infer(MODEL, grpc_inputs({"text": ["capture me"], TEXT_PAIR_INPUT: ["and me"]}))
    expected = joined_texts(["capture me"], ["and me"])[0]
    deadline = time.monotonic() + 10
    texts: list[str] = []
    while expected not in texts and time.monotonic() < deadline:
        time.sleep(0.1)
        texts = [
            json.loads(line).get("text")
            for path in capture_dir.glob("capture-*.jsonl")
            for line in path.open()
        ]
    assert expected in texts
    frame = pd.DataFrame({"sentence": ["capture me"], "text_pair": ["and me"], "label": [1]})
    assert model_inputs(frame) == ([("capture me", "and me")], [expected])


def test_typed_grpc_contents_and_a_single_sentence_model_that_gets_a_second_input(
    server_factory, model_dir: Path, tmp_path
) -> None:
    """The pair parser takes typed contents as well as raw ones; a single-sentence model refuses a
    second input as a bad request, as before."""
    from tritonclient.grpc import service_pb2

    from sentclf_server.service import RequestError, parse_pair_input

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    for name, values in (("text", ["a", "b"]), (TEXT_PAIR_INPUT, ["c", "d"])):
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[2])
        tensor.contents.bytes_contents.extend(value.encode() for value in values)
    assert parse_pair_input(request, 8, TEXT_PAIR_INPUT) == (["a", "b"], ["c", "d"])
    del request.inputs[1].contents.bytes_contents[1]
    with pytest.raises(RequestError, match=f"input '{TEXT_PAIR_INPUT}' has shape \\[2\\] but 1 elements"):
        parse_pair_input(request, 8, TEXT_PAIR_INPUT)

    server = server_factory(model_dir, tmp_path / "server.log")
    try:
        with triton_http.InferenceServerClient(server.http_url) as client:
            with pytest.raises(InferenceServerException) as refused:
                client.infer("cola", http_inputs({"text": FIRST, TEXT_PAIR_INPUT: SECOND}, binary=True))
            assert refused.value.status() == "400" and "unexpected input" in refused.value.message()
            assert [t["name"] for t in client.get_model_metadata("cola")["inputs"]] == ["text"]
    finally:
        server.stop()


def test_the_building_steps_smoke_test_sends_pairs_to_a_pairs_model(pairs_model_dir: Path) -> None:
    import building

    config = ServingConfig.read(pairs_model_dir)
    items = building.smoke_items(config)
    assert len(items) == 2 and all(isinstance(item, tuple) and len(item) == 2 for item in items)
    assert split_items(items)[1] is not None  # what build_inputs sends as the second input
    assert building.smoke_items(with_pair_input(config, None)) == list(building.SMOKE_SENTENCES)


def test_the_smoke_tests_check_reads_softmax_or_sigmoid_answers(pairs_model_dir: Path) -> None:
    import dataclasses

    import building

    config = ServingConfig.read(pairs_model_dir)
    items = ["a", "b"]
    labels = np.array([0, 1])
    softmax = np.array([[0.3, 0.7], [0.9, 0.1]], dtype=np.float32)
    sigmoid = np.array([[0.45, 0.6], [0.2, 0.3]], dtype=np.float32)  # each label decided alone
    assert building.answer_is_sound(labels, softmax, items, config)
    assert not building.answer_is_sound(labels, sigmoid, items, config)
    multi = dataclasses.replace(config, label_mode="multi")
    assert building.answer_is_sound(labels, sigmoid, items, multi)
    assert not building.answer_is_sound(labels, sigmoid + 1.0, items, multi)
    assert not building.answer_is_sound(labels[:1], softmax, items, config)
