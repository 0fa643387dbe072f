"""The what-if page's parts (issue 35, part 3), on the fake model of the server tests (tests/server/
conftest.py): input checks, the embedding output added to the graph, occlusion, neighbours by class name,
and the Starlette app's answers to good and bad input."""

import json
import os

import numpy as np
import onnx
import pytest
from starlette.testclient import TestClient

from tests.server.conftest import TICKET_LABELS, make_model_dir
from tools.explore import (
    EMBEDDING_OUTPUT,
    MAX_CHARS,
    ExploreInputError,
    Explorer,
    app,
    check_text,
    expose_embedding,
    occlusion,
)

TRAINING = [
    ("the cat sat on the mat", 1),
    ("the dog ran on the mat", 1),
    ("colorless green ideas sleep furiously", 0),
    ("we read the book quickly", 1),
    ("it was very bad", 0),
    ("she reads slowly", 1),
]


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    model_dir = make_model_dir(tmp_path_factory.mktemp("explore-model"))
    texts, labels = zip(*TRAINING, strict=True)
    return Explorer(model_dir, list(texts), list(labels), "fake version 1")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("x" * (MAX_CHARS + 1), "characters"),
        ("abc\x00\x01def", "binary"),
        ("bad \ufffd bytes", "binary"),
        (" ".join(["word"] * 200), "words"),
        (42, "JSON"),
    ],
)
def test_bad_input_is_named(text, problem):
    with pytest.raises(ExploreInputError, match=problem):
        check_text(text)


def test_a_sentence_passes_stripped():
    assert check_text("  The cat sat.\n") == "The cat sat."


def test_the_embedding_is_the_input_of_the_final_linear_layer(tmp_path):
    model_dir = make_model_dir(tmp_path / "m")
    rewritten, name = expose_embedding((model_dir / "model.onnx").read_bytes())
    assert name == EMBEDDING_OUTPUT
    graph = onnx.load_from_string(rewritten).graph
    assert [o.name for o in graph.output] == ["logits", EMBEDDING_OUTPUT]
    identity = next(n for n in graph.node if n.output[0] == EMBEDDING_OUTPUT)
    assert list(identity.input) == ["features"]  # the fake model's [mean id, tokens] vector


def test_a_graph_without_a_linear_head_keeps_its_bytes():
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Identity", ["x"], ["logits"])],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 2])],
        [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["b", 2])],
    )
    data = h.make_model(graph).SerializeToString()
    assert expose_embedding(data) == (data, None)


def test_occlusion_weighs_each_word_by_the_drop_without_it():
    def predict(texts):  # class 1's probability: 0.9 with "good" in the text, else 0.2
        return np.array([[0.1, 0.9] if "good" in t.split() else [0.8, 0.2] for t in texts])

    weights = dict(occlusion(predict, "a good book", predicted=1))
    assert weights["good"] == pytest.approx(0.7) and weights["a"] == 0 and weights["book"] == 0
    assert occlusion(predict, "good", 1) == [("good", 0.0)]


def test_explain_names_the_class_the_words_and_the_neighbours(explorer):
    answer = explorer.explain("the cat sat on the mat")
    assert answer["label"] in ("unacceptable", "acceptable")
    assert sum(p["probability"] for p in answer["probabilities"]) == pytest.approx(1, abs=1e-5)
    assert [w["word"] for w in answer["words"]] == ["the", "cat", "sat", "on", "the", "mat"]
    assert answer["neighbours"][0]["text"] == "the cat sat on the mat"  # itself, in the training data
    assert answer["neighbours"][0]["similarity"] == pytest.approx(1, abs=1e-5)
    assert answer["embedding"] == "the model's pooled sentence vector"
    assert all(n["label"] != answer["label"] for n in answer["other_class"])
    assert answer["other_class"]
    json.dumps(answer)  # the page's JSON


def test_one_run_scores_and_embeds_in_input_order_as_predict_and_one_at_a_time_do(explorer):
    """label_next's pass over thousands of candidates: calls grouped by length, answers in input order."""
    texts = [text for text, _ in TRAINING] * 3 + ["a", "the longest sentence of them all by a few words"]
    probabilities, vectors = explorer.score_and_embed(texts)
    np.testing.assert_allclose(probabilities, explorer.scorer.predict(texts), atol=1e-5)
    alone = np.stack([explorer.embed([text])[0] for text in texts])
    np.testing.assert_allclose(vectors, alone, atol=1e-4)
    empty_probabilities, empty_vectors = explorer.score_and_embed([])
    assert empty_probabilities.shape == (0, len(explorer.names)) and len(empty_vectors) == 0


def test_many_classes_by_name(tmp_path):
    model_dir = make_model_dir(tmp_path / "tickets", labels=TICKET_LABELS, model_name="tickets")
    explorer = Explorer(model_dir, ["the cat", "furiously quickly slowly", "we read"], [0, 3, 1])
    answer = explorer.explain("the cat sat")
    assert [p["label"] for p in answer["probabilities"]] == list(TICKET_LABELS)
    assert {n["label"] for n in answer["neighbours"]} <= set(TICKET_LABELS)


def test_the_app_answers_bad_input_with_a_message_not_a_trace(explorer):
    client = TestClient(app(explorer))
    assert "What if?" in client.get("/").text
    assert client.get("/api/info").json()["labels"] == ["unacceptable", "acceptable"]
    good = client.post("/api/explain", json={"text": "the dog ran"})
    assert good.status_code == 200 and good.json()["label"]
    for body in (
        b"",
        b"not json",
        b'{"text": ""}',
        b"\xff\xfe\x00binary",
        json.dumps({"text": "x" * 5000}).encode(),
    ):
        answer = client.post("/api/explain", content=body)
        assert answer.status_code == 400, body
        assert answer.json()["error"] and "Traceback" not in answer.text


def register_whatif(tmp_path):
    """A registered `whatif` version (onnx flavor layout, alias champion) whose train run names a
    preprocess run with TRAINING as its train split; returns that preprocess run's id."""
    import mlflow
    import mlflow.onnx
    import pandas as pd

    from sentclf.schema import split_artifact_path

    data = tmp_path / "data"
    data.mkdir()
    texts, labels = zip(*TRAINING, strict=True)
    pd.DataFrame({"sentence": texts, "label": labels}).to_parquet(data / "train.parquet")
    with mlflow.start_run() as data_run:
        mlflow.log_artifact(str(data / "train.parquet"), split_artifact_path("train").rsplit("/", 1)[0])
    files = make_model_dir(tmp_path / "files")
    with mlflow.start_run() as train_run:
        mlflow.set_tag("input.data_run_id", data_run.info.run_id)
        info = mlflow.onnx.log_model(
            onnx.load(str(files / "model.onnx")),
            name="model",
            registered_model_name="whatif",
            extra_files=[str(files / "tokenizer.json"), str(files / "serving_config.json")],
        )
    mlflow.MlflowClient().set_registered_model_alias("whatif", "champion", info.registered_model_version)
    assert train_run.info.run_id
    return data_run.info.run_id


def test_a_registered_alias_loads_with_its_own_training_sentences(tracking_store, tmp_path):
    """load_version resolves models:/name@alias, downloads the version (onnx flavor layout) and indexes the
    train split of the preprocess run its train run names."""
    from tools.explore import load_version

    data_run_id = register_whatif(tmp_path)
    explorer = load_version("models:/whatif@champion", max_rows=4, work_dir=tmp_path / "work")
    texts = [text for text, _ in TRAINING]
    assert len(explorer.texts) == 4 and set(explorer.texts) <= set(texts)  # a sample of max_rows
    assert f"preprocess run {data_run_id}" in explorer.source
    assert explorer.explain("the cat sat")["label"] in ("unacceptable", "acceptable")
    with pytest.raises(SystemExit, match="no such version"):
        load_version("models:/whatif@nobody", 10, tmp_path / "w2")
    with pytest.raises(SystemExit, match="is not models"):
        load_version("whatif", 10, tmp_path / "w3")


def copies(scratch) -> list[str]:
    """The page's own temporary folders (onnxruntime keeps a session file of its own there too)."""
    return [name for name in os.listdir(scratch) if name.startswith("sentclf-explore-")]


@pytest.mark.timed  # waits for the page with a deadline
def test_the_page_stopped_by_sigterm_leaves_no_model_copy_behind(tracking_store, tmp_path):
    """`kill` (SIGTERM, what a supervisor or a test sends) stops the page and removes its temporary model
    copies: uvicorn raises SIGTERM again after its shutdown, which would end Python before its cleanup."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from sentclf.containers import free_port
    from tests.conftest import REPO_ROOT

    register_whatif(tmp_path)
    scratch, port = tmp_path / "tmp", free_port()
    scratch.mkdir()
    page = subprocess.Popen(
        [sys.executable, "-m", "tools.explore", "--model", "models:/whatif@champion", "--port", str(port)],
        cwd=REPO_ROOT,
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert page.poll() is None, page.stdout.read()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the page did not answer in 2 minutes"
                time.sleep(0.5)
        assert len(copies(scratch)) == 2  # the downloaded version and the rewritten graph
        page.send_signal(signal.SIGTERM)
        assert page.wait(30) == 128 + signal.SIGTERM
        assert copies(scratch) == []
    finally:
        page.kill()
        page.wait()
