"""Sentence pairs in the train room: a split with a second text is encoded with the tokenizer's pair
template, truncated longest-first, its token types fed to the model, exactly as the runtime's scorer
encodes the pair from the tokenizer.json the version ships; the exported graph then answers a pair through
the scorer as PyTorch does; the serving config says the model takes pairs. No training."""

import argparse

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sentclf.backbone import resolve_backbone
from sentclf.schema import LABEL_COLUMN, TEXT_COLUMN, TEXT_PAIR_COLUMN, LabelSet
from sentclf_runtime.config import ServingConfig
from sentclf_runtime.pairs import TEXT_PAIR_INPUT, pair_input
from sentclf_runtime.scorer import Scorer, load_tokenizer, softmax

import train
from export import export_onnx
from training import EncodedSplit, collate, encode_split

MAX_SEQ_LENGTH = 16
PAIRS = pd.DataFrame(
    {
        TEXT_COLUMN: ["How do I reset my password?", "Where is it?", "short", " ".join(["long"] * 30)],
        TEXT_PAIR_COLUMN: [
            "What is the way to reset my password?",
            "Who is it?",
            " ".join(["word"] * 30),
            "x",
        ],
        LABEL_COLUMN: [1, 0, 0, 1],
    }
)


def test_a_pair_is_encoded_as_the_runtime_encodes_it(tmp_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("bundled"))
    split = encode_split(PAIRS, tokenizer, MAX_SEQ_LENGTH)
    assert split.token_type_ids is not None and split.texts[0].endswith("reset my password?")
    tokenizer.save_pretrained(str(tmp_path))
    runtime, _ = load_tokenizer(tmp_path / "tokenizer.json", MAX_SEQ_LENGTH)
    pairs = list(zip(PAIRS[TEXT_COLUMN], PAIRS[TEXT_PAIR_COLUMN], strict=True))
    encodings = runtime.encode_batch_fast(pairs)
    assert split.input_ids == [encoding.ids for encoding in encodings]
    assert split.token_type_ids == [encoding.type_ids for encoding in encodings]
    # Longest-first: a 30-word second text leaves the short first one whole, and the other way round.
    assert [len(ids) for ids in split.input_ids[2:]] == [MAX_SEQ_LENGTH, MAX_SEQ_LENGTH]
    assert split.token_type_ids[2].count(0) == 3  # [CLS] short [SEP]
    assert split.token_type_ids[3].count(1) == 2  # x [SEP]


def test_collate_feeds_the_second_segment_and_a_single_split_stays_zero() -> None:
    pairs = EncodedSplit([[101, 5, 102, 6, 102], [101, 7, 102, 8]], np.array([1, 0]), ["a", "b"])
    pairs.token_type_ids = [[0, 0, 0, 1, 1], [0, 0, 0, 1]]
    batch = collate(pairs, np.array([1, 0]), pad_id=0)
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    single = EncodedSplit([[101, 5, 102]], np.array([1]), ["a"])
    assert collate(single, np.array([0]), pad_id=0)["token_type_ids"].tolist() == [[0, 0, 0]]


def test_the_exported_graph_answers_a_pair_through_the_scorer_as_pytorch_does(tmp_path) -> None:
    source = resolve_backbone("bundled")
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).eval()
    split = encode_split(PAIRS, tokenizer, MAX_SEQ_LENGTH)
    batch = collate(split, np.arange(len(split)), tokenizer.pad_token_id)
    export_onnx(model, batch, tmp_path / "model.onnx")
    tokenizer.save_pretrained(str(tmp_path))
    args = argparse.Namespace(max_seq_length=MAX_SEQ_LENGTH, text_pair_column="question2")
    written = train.write_serving_config(tmp_path, args, LabelSet.from_values([0, 1], ["different", "same"]))
    assert pair_input(ServingConfig.read(written)) == TEXT_PAIR_INPUT
    scorer = Scorer.from_dir(tmp_path)
    probs = scorer.predict(PAIRS[TEXT_COLUMN].tolist(), PAIRS[TEXT_PAIR_COLUMN].tolist())
    with torch.inference_mode():
        inputs = {name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids")}
        expected = softmax(model(**inputs).logits.numpy())
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    # The segments matter to the backbone: with every token type 0 the answer differs.
    with torch.inference_mode():
        flat = softmax(
            model(**(inputs | {"token_type_ids": torch.zeros_like(batch["input_ids"])})).logits.numpy()
        )
    assert np.abs(flat - expected).max() > 1e-4


def test_a_single_sentence_serving_config_names_no_pair(tmp_path) -> None:
    args = argparse.Namespace(max_seq_length=MAX_SEQ_LENGTH, text_pair_column=None)
    written = train.write_serving_config(tmp_path, args, LabelSet.from_values([0, 1]))
    assert pair_input(ServingConfig.read(written)) is None
