"""Sentence pairs and several labels per text together (#36, parts 1 and 2): a pairs file whose labels are
a list (or one 0/1 column per label) keeps both through preprocess, and the train step encodes it with the
pair template and multi-hot targets."""

from pathlib import Path

import pandas as pd
import pytest

from examples.multilabel import generate
from sentclf.data import read_label_mode, read_schema, read_split, read_text_pair_column
from sentclf.schema import LABEL_COLUMN, SPLITS, TEXT_COLUMN, TEXT_PAIR_COLUMN
from tests.unit import test_preprocess as base

store = base.store
experiment = base.experiment
NAMES = ("billing", "login", "refund", "shipping")


@pytest.fixture
def tickets(tmp_path) -> tuple[Path, Path]:
    """The example tickets as `make example-data` writes them: tickets.csv, tickets_columns.csv."""
    return generate.write_tickets(tmp_path / "example-tickets")


def pairs_of_tickets(source: Path, path: Path) -> None:
    """The example tickets with a second text per row (the customer's follow-up)."""
    frame = pd.read_csv(source)
    frame.insert(1, "follow_up", [f"Follow-up number {i} from the customer." for i in range(len(frame))])
    frame.to_csv(path, index=False)


@pytest.mark.parametrize("columns", [False, True], ids=["list", "indicators"])
def test_a_pairs_file_with_several_labels_per_text(experiment, tmp_path, tickets, columns):  # noqa: F811
    pairs_of_tickets(tickets[1] if columns else tickets[0], tmp_path / "tickets.csv")
    run = base.run_step(
        experiment,
        dataset=str(tmp_path / "tickets.csv"),
        text_column="text",
        label_column="billing,login,refund,shipping" if columns else "labels",
        label_mode="multi",
        text_pair_column="follow_up",
    )
    run_id = run.info.run_id
    schema = read_schema(run_id)
    assert schema["label_mode"] == "multi" and schema["columns"][LABEL_COLUMN] == "list<int64>"
    assert read_text_pair_column(run_id) == "follow_up" and read_label_mode(run_id) == "multi"
    splits = {name: read_split(run_id, name) for name in SPLITS}
    assert sum(len(frame) for frame in splits.values()) == 400
    train = splits["train"]
    assert list(train.columns) == [TEXT_COLUMN, TEXT_PAIR_COLUMN, LABEL_COLUMN]
    assert train[TEXT_PAIR_COLUMN].str.startswith("Follow-up number").all()
    assert {len(row) for row in train[LABEL_COLUMN]} == {1, 2, 3}


def test_the_train_step_encodes_a_pair_with_multi_hot_targets():
    from transformers import AutoTokenizer

    from sentclf.backbone import resolve_backbone

    from training import collate, encode_split

    frame = pd.DataFrame(
        {TEXT_COLUMN: ["charged twice", "no reset mail"], TEXT_PAIR_COLUMN: ["still", "again"]}
    ).assign(**{LABEL_COLUMN: [[0, 2], [1]]})
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("bundled"))
    split = encode_split(frame, tokenizer, 16, len(NAMES))
    assert split.token_type_ids is not None and all(1 in row for row in split.token_type_ids)
    assert split.labels.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]
    batch = collate(split, [0, 1], tokenizer.pad_token_id)
    assert batch["labels"].dtype.is_floating_point and int(batch["token_type_ids"].max()) == 1
    single = encode_split(frame.drop(columns=[TEXT_PAIR_COLUMN]), tokenizer, 16, len(NAMES))
    assert single.token_type_ids is None and single.labels.tolist() == split.labels.tolist()
