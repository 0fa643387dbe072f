"""Sentence pairs in the evaluate room: the test rows become (text, text_pair) items, which the gRPC client
sends as two BYTES inputs and the in-process scorer reads as pairs; the report's and the model card's
examples show both texts."""

import numpy as np
import pandas as pd
import pytest

from sentclf.kserve_client import build_inputs
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, TEXT_PAIR_COLUMN
from sentclf_runtime.pairs import TEXT_PAIR_INPUT, PairError, split_items

from pair_rows import card_lines, evaluation_items, joined, pair_examples

TEST = pd.DataFrame({TEXT_COLUMN: ["a b?", "c|d?"], TEXT_PAIR_COLUMN: ["e f?", "g h?"], LABEL_COLUMN: [1, 0]})


def test_pairs_travel_as_items_and_go_out_as_two_inputs() -> None:
    items = evaluation_items(TEST)
    assert items == [("a b?", "e f?"), ("c|d?", "g h?")]
    assert joined(items) == ["a b? [SEP] e f?", "c|d? [SEP] g h?"]
    tensors = build_inputs(items)
    assert [tensor.name() for tensor in tensors] == ["text", TEXT_PAIR_INPUT]
    assert [tensor.shape() for tensor in tensors] == [[2], [2]]
    single = evaluation_items(TEST.drop(columns=TEXT_PAIR_COLUMN))
    assert single == ["a b?", "c|d?"] and [t.name() for t in build_inputs(single)] == ["text"]
    with pytest.raises(PairError, match="mixed"):
        split_items(["a", ("b", "c")])


def test_the_examples_show_both_texts_the_label_and_the_answer() -> None:
    items = evaluation_items(TEST)
    examples = pair_examples(items, np.array([1, 0]), np.array([1, 1]), ["different", "same"])
    assert examples[1] == {"text": "c|d?", "text_pair": "g h?", "label": "different", "predicted": "same"}
    assert pair_examples(["a", "b"], np.array([0, 1]), np.array([0, 1]), ["x", "y"]) == ()
    lines = card_lines(examples, "question2")
    assert "## Task: sentence pairs" in lines and "| c\\|d? | g h? | different | same |" in lines
    assert any("`question2`" in line for line in lines)
    assert card_lines((), None) == []
