"""The what-if page with a sentence-pair version (the fake model of the server tests, made a pairs model):
two texts scored together, occlusion over the words of both, training pairs as neighbours, the second
text box on the page, and clear messages for a missing or bad second text."""

import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from sentclf_runtime.config import ServingConfig
from sentclf_runtime.pairs import with_pair_input
from sentclf_runtime.scorer import Scorer
from tests.server.conftest import make_model_dir
from tools.explore import ExploreInputError, Explorer, app, pair_occlusion

TRAINING = [
    (("the cat sat", "on the mat"), 1),
    (("the dog ran", "on the mat"), 1),
    (("colorless green ideas", "sleep furiously"), 0),
    (("it was", "very bad"), 0),
]


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    model_dir = make_model_dir(tmp_path_factory.mktemp("explore-pairs"))
    with_pair_input(ServingConfig.read(model_dir)).write(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def explorer(pairs_dir):
    items, labels = zip(*TRAINING, strict=True)
    return Explorer(pairs_dir, list(items), list(labels), "pairs version 1")


def test_occlusion_removes_each_word_of_either_text_the_other_kept_whole():
    seen = []

    def predict(texts, pairs):  # class 1's probability: 0.9 when "good" is in either text, else 0.2
        seen.extend(zip(texts, pairs, strict=True))
        return np.array(
            [
                [0.1, 0.9] if "good" in f"{a} {b}".split() else [0.8, 0.2]
                for a, b in zip(texts, pairs, strict=True)
            ]
        )

    weights = pair_occlusion(predict, "a book", "so good", predicted=1)
    assert weights == [
        ("text", "a", 0.0),
        ("text", "book", 0.0),
        ("text_pair", "so", 0.0),
        ("text_pair", "good", pytest.approx(0.7)),
    ]
    assert seen == [
        ("a book", "so good"),
        ("book", "so good"),
        ("a", "so good"),
        ("a book", "good"),
        ("a book", "so"),
    ]
    # a one-word text is never removed (no pair has an empty side): weight 0, not scored
    assert pair_occlusion(predict, "good", "x y", 1)[0] == ("text", "good", 0.0)


def test_a_pair_is_explained_as_the_model_reads_it(explorer, pairs_dir):
    answer = explorer.explain("the cat sat", "on the mat")
    reference = Scorer.from_dir(pairs_dir).predict(["the cat sat"], ["on the mat"])[0]
    assert [p["probability"] for p in answer["probabilities"]] == pytest.approx(reference.tolist(), abs=1e-6)
    assert [(w["side"], w["word"]) for w in answer["words"]] == [
        ("text", "the"),
        ("text", "cat"),
        ("text", "sat"),
        ("text_pair", "on"),
        ("text_pair", "the"),
        ("text_pair", "mat"),
    ]
    assert answer["text_pair"] == "on the mat"
    assert answer["neighbours"][0]["text"] == "the cat sat [SEP] on the mat"  # itself, a training pair
    assert answer["neighbours"][0]["similarity"] == pytest.approx(1, abs=1e-5)
    json.dumps(answer)


def test_a_missing_or_bad_second_text_is_named(explorer):
    with pytest.raises(ExploreInputError, match="reads sentence pairs"):
        explorer.explain("the cat sat")
    with pytest.raises(ExploreInputError, match="the second text: type a sentence first"):
        explorer.explain("the cat sat", "  ")
    client = TestClient(app(explorer))
    assert client.get("/api/info").json()["pair_input"] == "text_pair"
    assert 'id="text-pair"' in client.get("/").text
    good = client.post("/api/explain", json={"text": "the dog ran", "text_pair": "on the mat"})
    assert good.status_code == 200 and good.json()["words"][-1] == {
        "side": "text_pair",
        "word": "mat",
        "weight": good.json()["words"][-1]["weight"],
    }
    missing = client.post("/api/explain", json={"text": "the dog ran"})
    assert missing.status_code == 400 and "text_pair" in missing.json()["error"]


def test_a_single_sentence_version_refuses_a_second_text(tmp_path):
    single = Explorer(make_model_dir(tmp_path / "single"), ["the cat"], [1])
    assert single.pair_input is None
    with pytest.raises(ExploreInputError, match="reads single sentences"):
        single.explain("the cat", "the dog")
    assert TestClient(app(single)).get("/api/info").json()["pair_input"] is None


def test_a_pairs_train_split_gives_training_pairs():
    import pandas as pd

    from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, TEXT_PAIR_COLUMN
    from tools.explore import training_items

    train = pd.DataFrame({TEXT_COLUMN: ["a?", "b?"], TEXT_PAIR_COLUMN: ["c?", "d?"], LABEL_COLUMN: [0, 1]})
    assert training_items(train) == [("a?", "c?"), ("b?", "d?")]
    assert training_items(train.drop(columns=TEXT_PAIR_COLUMN)) == ["a?", "b?"]
