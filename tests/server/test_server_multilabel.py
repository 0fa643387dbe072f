"""A multi-label model (serving_config.json `label_mode: multi`, one threshold per label) served by the real
server process, driven with tritonclient over gRPC and HTTP: each text's label set comes back in
`label_set` (a JSON list of names), every label's own sigmoid probability in `probabilities`, and the
model's metadata and ModelConfig name the extra output, the mode and the thresholds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http

from sentclf_runtime.scorer import Scorer

TEXTS = [
    "the cat sat on the mat",
    "it was very good",
    "colorless green ideas sleep furiously",
    "they read quickly",
    "slowly slowly slowly slowly slowly",
    "héllo wörld ✓",
]
LABELS = ("billing", "login", "shipping", "refund")


@pytest.fixture(scope="module")
def multi_model_dir(model_dir_factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture model with four logits, read as four independent labels; each label's threshold is its
    median probability over TEXTS, so some texts get several labels and some none."""
    path = model_dir_factory(tmp_path_factory.mktemp("multi_model"), labels=LABELS, model_name="tickets")
    config_path = path / "serving_config.json"
    config = json.loads(config_path.read_text()) | {"label_mode": "multi"}
    config_path.write_text(json.dumps(config))
    probs = Scorer.from_dir(path).predict(TEXTS)
    thresholds = np.clip(np.median(probs, axis=0), 1e-6, 1 - 1e-6)
    config_path.write_text(json.dumps(config | {"thresholds": thresholds.tolist()}))
    return path


@pytest.fixture(scope="module")
def multi_server(multi_model_dir: Path, server_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    running = server_factory(multi_model_dir, tmp_path_factory.mktemp("server") / "server.log")
    yield running
    assert running.stop() == 0, running.log()


def expected(model_dir: Path, reference_probs) -> tuple[np.ndarray, list[list[str]]]:
    """The runtime's per-label probabilities (a sigmoid per logit: monotone in the logits, so ordered as
    the fixture's softmax reference within a row (ties where float32 saturates), but rows need not sum to
    1), and the label sets the config's thresholds decide."""
    softmax = reference_probs(model_dir / "tokenizer.json", TEXTS)
    config = json.loads((model_dir / "serving_config.json").read_text())
    probs = Scorer.from_dir(model_dir).predict(TEXTS)
    higher = softmax[:, :, None] > softmax[:, None, :]
    assert np.all((probs[:, :, None] >= probs[:, None, :])[higher])
    assert not np.allclose(probs.sum(axis=1), 1.0)
    sets = [[LABELS[j] for j in range(len(LABELS)) if row[j] >= config["thresholds"][j]] for row in probs]
    return probs, sets


def test_grpc_answers_label_sets_and_every_label_probability(
    multi_server, multi_model_dir: Path, reference_probs
) -> None:
    probs, sets = expected(multi_model_dir, reference_probs)
    assert any(len(chosen) >= 2 for chosen in sets) and any(not chosen for chosen in sets)
    with triton.InferenceServerClient(multi_server.url) as client:
        metadata = client.get_model_metadata("tickets", as_json=True)
        assert metadata["outputs"][-1] == {"name": "label_set", "datatype": "BYTES", "shape": ["-1"]}
        parameters = client.get_model_config("tickets", as_json=True)["config"]["parameters"]
        assert parameters["label_mode"]["string_value"] == "multi"
        thresholds = json.loads(parameters["thresholds"]["string_value"])
        assert len(thresholds) == len(LABELS)
        tensor = triton.InferInput("text", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(np.array(TEXTS, dtype=object))
        result = client.infer("tickets", [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
    assert [json.loads(item) for item in result.as_numpy("label_set")] == sets
    np.testing.assert_array_equal(result.as_numpy("label"), probs.argmax(axis=1))


def test_http_answers_the_same_label_sets(multi_server, multi_model_dir: Path, reference_probs) -> None:
    probs, sets = expected(multi_model_dir, reference_probs)
    with triton_http.InferenceServerClient(multi_server.http_url) as client:
        metadata = client.get_model_metadata("tickets")
        assert [output["name"] for output in metadata["outputs"]][-1] == "label_set"
        tensor = triton_http.InferInput("text", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=False)
        wanted = [
            triton_http.InferRequestedOutput("label_set", binary_data=False),
            triton_http.InferRequestedOutput("probabilities", binary_data=True),
        ]
        result = client.infer("tickets", [tensor], outputs=wanted)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
    assert [json.loads(item) for item in result.as_numpy("label_set")] == sets


def test_a_single_label_model_does_not_answer_label_set(server_factory, model_dir: Path, tmp_path) -> None:
    """`label_set` is a multi-label model's output only: a single-label server refuses the name."""
    running = server_factory(model_dir, tmp_path / "server.log")
    try:
        with triton.InferenceServerClient(running.url) as client:
            tensor = triton.InferInput("text", [1], "BYTES")
            tensor.set_data_from_numpy(np.array(["a text"], dtype=object))
            with pytest.raises(triton.InferenceServerException, match="unknown output 'label_set'"):
                client.infer("cola", [tensor], outputs=[triton.InferRequestedOutput("label_set")])
            names = [o["name"] for o in client.get_model_metadata("cola", as_json=True)["outputs"]]
            assert names == ["label", "probabilities", "label_name"]
    finally:
        assert running.stop() == 0, running.log()
