"""Sentence pairs in the train step: a preprocess run whose schema names a second text column
(preprocess/text_pairs.py) trains on each row's two texts encoded together with the tokenizer's pair
template (`[CLS] a [SEP] b [SEP]`, token type 1 for the second segment), truncated `longest_first` so that
a long text never pushes the other out, which is exactly what the runtime's scorer does with the
tokenizer.json it ships (sentclf_runtime.pairs); the serving config then says the model takes pairs.
Everything else (labels, head, calibration, export, registration) is the single-sentence path's.
"""

import pandas as pd
from transformers import PreTrainedTokenizerBase

from sentclf.schema import TEXT_COLUMN, TEXT_PAIR_COLUMN
from sentclf_runtime.config import ServingConfig
from sentclf_runtime.pairs import with_pair_input

# How a pair reads in the run's tables (misclassified rows): both texts, the separator the model sees.
SHOWN_SEPARATOR = " [SEP] "


def is_pairs(frame: pd.DataFrame) -> bool:
    return TEXT_PAIR_COLUMN in frame.columns


def encode_pairs(
    frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """(input_ids, token_type_ids, the pairs as shown) of a pairs split, truncated longest-first."""
    firsts, seconds = frame[TEXT_COLUMN].tolist(), frame[TEXT_PAIR_COLUMN].tolist()
    encoded = tokenizer(
        firsts, seconds, truncation="longest_first", max_length=max_seq_length, return_token_type_ids=True
    )
    shown = [first + SHOWN_SEPARATOR + second for first, second in zip(firsts, seconds, strict=True)]
    return encoded["input_ids"], encoded["token_type_ids"], shown


def serving_config_for(config: ServingConfig, text_pair_column: str | None) -> ServingConfig:
    """The version's serving config, saying it takes pairs when its data were pairs."""
    return with_pair_input(config) if text_pair_column else config
