"""Unlabelled text as people point to it (sentclf/unlabelled_text.py) and how the conductor hands it to
preprocess: a capture folder gives its served texts, a fingerprint that follows every file's bytes (the step
cache's input), and an absolute host path for `~`."""

import json

import pytest

from conductor.pipeline import unlabelled_path
from sentclf.unlabelled_text import TextSourceError, any_texts, source_fingerprint


def write_capture(folder, texts, served=True):
    folder.mkdir(exist_ok=True)
    with (folder / "capture-20261205T000000-host-1-0.jsonl").open("a") as out:
        for i, text in enumerate(texts):
            record = {"time": "2026-12-05T00:00:00.000000Z", "model": "m", "version": "1", "id": str(i)}
            out.write(json.dumps(record | {"index": 0, "served": served, "text": text}) + "\n")


def test_a_capture_folder_gives_its_served_texts_and_a_plain_folder_its_files(tmp_path):
    write_capture(tmp_path / "captured", ["one served", "two served"])
    assert any_texts(tmp_path / "captured", "sentence", "unlabelled", "text_column") == [
        "one served",
        "two served",
    ]
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("first\nsecond\n")
    assert any_texts(tmp_path / "plain", "sentence", "unlabelled", "text_column") == ["first", "second"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextSourceError, match="unlabelled .*empty: no .txt, .csv"):
        any_texts(tmp_path / "empty", "sentence", "unlabelled", "text_column")


def test_the_fingerprint_follows_new_records(tmp_path):
    write_capture(tmp_path / "captured", ["one"])
    before = source_fingerprint(tmp_path / "captured")
    assert source_fingerprint(tmp_path / "captured") == before
    write_capture(tmp_path / "captured", ["two"])
    assert source_fingerprint(tmp_path / "captured") != before


def test_the_conductor_hands_on_an_absolute_host_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "texts.txt").write_text("a\n")
    assert unlabelled_path("~/texts.txt") == tmp_path / "texts.txt"
    assert unlabelled_path("none") is None and unlabelled_path(str(tmp_path / "missing.txt")) is None
