"""`python -m tools.label_next` on a fake capture folder and a plain file, with the fake model of the server
tests (tests/server/conftest.py) as the version: the batch file's columns, what is skipped (the data's
sentences, earlier batches, repeats), the mix of uncertainty and diversity, and the bad-input messages."""

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from tests.server.conftest import make_model_dir
from tools import label_next

TRAINING = ["the cat sat on the mat", "it was very bad"]
CAPTURED = [f"captured sentence number {i} about something" for i in range(12)] + ["The  CAT sat on the mat"]


def write_capture(folder, texts, hashed=False):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "capture-20261205T000000-host-1-0.jsonl").open("w") as out:
        for i, text in enumerate(texts):
            record = {"time": "2026-12-05T00:00:00.000000Z", "model": "cola", "version": "1", "id": str(i)}
            record |= {"index": 0, "served": True, "route": "champion", "label": 1}
            record |= {"sha256": "00"} if hashed else {"text": text}
            out.write(json.dumps(record) + "\n")
        out.write("a line cut short by a full disk\n")
    return folder


@pytest.fixture
def fake_version(tmp_path, monkeypatch):
    model_dir = make_model_dir(tmp_path / "model")
    monkeypatch.setattr(label_next, "resolve_version", lambda uri, work: (model_dir, "run", "fake version 1"))
    monkeypatch.setattr(label_next, "labelled_keys", lambda run: {label_next.key_hash(t) for t in TRAINING})
    return model_dir


def argv(tmp_path, *extra):
    return ["--out", str(tmp_path / "queue"), *extra]


def test_a_capture_folder_gives_a_batch_ready_to_label_and_a_ledger(tmp_path, fake_version):
    capture = write_capture(tmp_path / "capture", CAPTURED + CAPTURED[:3])  # repeats are asked once
    args = label_next.parse_args(argv(tmp_path, "--capture", str(capture), "--count", "5"))
    path = label_next.run(args, now=datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC))
    assert path.name == "batch-20261205T010203Z.csv"
    batch = pd.read_csv(path, keep_default_na=False)
    assert list(batch.columns) == ["sentence", "label"] and (batch["label"] == "").all()
    assert len(batch) == 5 and batch["sentence"].is_unique
    assert "The  CAT sat on the mat" not in set(batch["sentence"])  # a training sentence, differently cased
    ledger = (tmp_path / "queue" / "asked.jsonl").read_text().splitlines()
    assert len(ledger) == 5 and json.loads(ledger[0])["batch"] == path.name
    # The next run never asks again for what a batch holds; 7 new candidates are left. In the same second
    # it writes a file of its own: the first batch, in the ledger, is not replaced.
    again = label_next.run(args, now=datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC))
    assert again.name == "batch-20261205T010203Z_2.csv"
    assert pd.read_csv(path, keep_default_na=False).equals(batch)
    assert not set(pd.read_csv(again)["sentence"]) & set(batch["sentence"])
    with pytest.raises(
        label_next.LabelNextError, match=r"only 2 new candidate\(s\) remain .* 10 already asked"
    ):
        label_next.run(args)


def test_a_plain_file_with_the_datas_own_column_names(tmp_path, fake_version):
    (tmp_path / "pool.txt").write_text("\n".join(CAPTURED[:6]) + "\n\n")
    path = label_next.run(
        label_next.parse_args(
            argv(tmp_path, "--texts", str(tmp_path / "pool.txt"), "--count", "3", "--text-column", "text")
            + ["--label-column", "topic"]
        )
    )
    assert list(pd.read_csv(path).columns) == ["text", "topic"]


def test_selection_mixes_uncertainty_with_diversity():
    # Three near-copies of the most uncertain sentence, and a less uncertain one far from them.
    vectors = np.array([[1.0, 0.0], [0.99, 0.01], [0.98, 0.02], [0.0, 1.0]])
    scores = np.array([0.9, 0.89, 0.88, 0.6])
    assert label_next.select(vectors, scores, 2, weight=1.0) == [0, 1]  # uncertainty only: near-copies
    assert label_next.select(vectors, scores, 2, weight=0.5) == [0, 3]
    assert label_next.uncertainty(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist() == [1.0, 0.0]


def test_balanced_selection_gives_each_predicted_class_its_turn():
    # The four most uncertain sentences are predicted class 0; class 1 and 2 have one candidate each.
    vectors = np.eye(6)
    scores = np.array([0.9, 0.89, 0.88, 0.87, 0.3, 0.2])
    classes = np.array([0, 0, 0, 0, 1, 2])
    assert label_next.select(vectors, scores, 4, weight=1.0) == [0, 1, 2, 3]
    assert label_next.select(vectors, scores, 4, weight=1.0, classes=classes) == [0, 4, 5, 1]
    # A class without candidates left no longer holds the others back.
    assert label_next.select(vectors, scores, 6, weight=1.0, classes=classes) == [0, 4, 5, 1, 2, 3]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda tmp: ["--capture", str((tmp / "empty").mkdir() or tmp / "empty")], "no capture records"),
        (
            lambda tmp: ["--capture", str(write_capture(tmp / "hashed", CAPTURED, hashed=True))],
            "hold no text",
        ),
        (
            lambda tmp: [
                "--texts",
                str(pd.DataFrame({"body": ["a b"]}).to_csv(tmp / "x.csv") or tmp / "x.csv"),
            ],
            r"no column 'sentence' \(its columns: .*body\); name the text column with --text-column",
        ),
        (
            lambda tmp: ["--capture", str(write_capture(tmp / "small", CAPTURED[:3])), "--count", "50"],
            r"asked for 50 sentences but only 3 new candidate\(s\) remain",
        ),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(tmp_path, fake_version, setup, message):
    with pytest.raises(SystemExit, match=message):
        label_next.main(argv(tmp_path, *setup(tmp_path)))
    assert not (tmp_path / "queue").exists()


def test_no_source_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        label_next.parse_args(argv(tmp_path))
