"""Sentence-pair models: what serving_config.json says about a model that reads two texts together
(duplicate questions, paraphrase, entailment, query-answer relevance), and the checks every caller of such
a model shares.

A pairs model's config holds `text_pair_input`: the name of its second input on the wire (the server's
second BYTES tensor, the pyfunc's second column). A config without it is a single-sentence model, as every
version before pairs was. The scorer encodes a pair with the tokenizer's pair template
(`[CLS] a [SEP] b [SEP]`, the second segment's token type 1), truncated `longest_first` so both sides keep
tokens, as train's `tokenizer(text, text_pair, truncation="longest_first")` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .config import ServingConfig

# serving_config.json's key: the second input's name; absent for a single-sentence model.
PAIR_INPUT_KEY = "text_pair_input"
# The name train writes (the server's second BYTES input and the pyfunc's second column).
TEXT_PAIR_INPUT = "text_pair"


class PairError(ValueError):
    """A request's second texts do not fit the model: missing for a pairs model, given to a
    single-sentence one, or of another length than the first texts."""


def pair_input(config: ServingConfig) -> str | None:
    """The second input's name of a pairs model; None for a single-sentence model."""
    name = config.extra.get(PAIR_INPUT_KEY)
    return str(name) if name else None


def with_pair_input(config: ServingConfig, name: str | None = TEXT_PAIR_INPUT) -> ServingConfig:
    """The same config, saying the model takes pairs with `name` as its second input (None: single)."""
    extra = {key: value for key, value in config.extra.items() if key != PAIR_INPUT_KEY}
    if name:
        extra[PAIR_INPUT_KEY] = name
    return replace(config, extra=extra)


def check_pairs(
    config: ServingConfig, texts: Sequence[str], text_pairs: Sequence[str] | None, first: str = "text"
) -> None:
    """PairError unless `text_pairs` fits the model: given, one per text, for a pairs model; absent for a
    single-sentence one. The message names the inputs and the fix."""
    second = pair_input(config)
    if second is None:
        if text_pairs is not None:
            raise PairError(
                f"this model reads single sentences: send only '{first}' (it has no second input)"
            )
        return
    if text_pairs is None:
        raise PairError(
            f"this model reads sentence pairs: send '{second}' beside '{first}', one second text per text"
        )
    if len(text_pairs) != len(texts):
        raise PairError(
            f"'{first}' has {len(texts)} element(s) but '{second}' has {len(text_pairs)}: send one "
            f"'{second}' per '{first}'"
        )


def split_items(items: Sequence[str | tuple[str, str]]) -> tuple[list[str], list[str] | None]:
    """(texts, text_pairs) of items that are all sentences (text_pairs None) or all (text, text_pair)
    tuples: the one-list form evaluate, the benches' load and the server's batcher hand pairs on in."""
    items = list(items)
    paired = [isinstance(item, tuple | list) for item in items]
    if not any(paired):
        return items, None
    if not all(paired) or any(len(item) != 2 for item in items):
        raise PairError(
            "mixed items: give every item as a sentence, or every item as a (text, text_pair) pair"
        )
    return [str(item[0]) for item in items], [str(item[1]) for item in items]


# A pair as one text, where one text per row is kept: the capture's record (and so the monitor's traffic
# features, compared with the training pairs joined the same way), tables of examples.
PAIR_SEPARATOR = " [SEP] "


def joined_texts(texts: Sequence[str], text_pairs: Sequence[str]) -> list[str]:
    return [first + PAIR_SEPARATOR + second for first, second in zip(texts, text_pairs, strict=True)]
