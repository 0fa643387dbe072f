"""Sentence pairs in the evaluate step: a preprocess run whose splits hold a second text
(schema.json's text_pair_column) is evaluated on (text, text_pair) items, the one-list form the gRPC
client (sentclf.kserve_client: two BYTES inputs), the load generator and the in-process scorer
(sentclf.text_model) all take; the report and the model card show a few test pairs with both texts, what
the served model answered and what the label was.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sentclf.schema import TEXT_COLUMN, TEXT_PAIR_COLUMN
from sentclf_runtime.pairs import TEXT_PAIR_INPUT, joined_texts, split_items

EXAMPLES_SHOWN = 5


def evaluation_items(test: pd.DataFrame) -> list:
    """The test rows as the model reads them: sentences, or (text, text_pair) tuples for a pairs task."""
    if TEXT_PAIR_COLUMN not in test.columns:
        return test[TEXT_COLUMN].tolist()
    return list(zip(test[TEXT_COLUMN].tolist(), test[TEXT_PAIR_COLUMN].tolist(), strict=True))


def joined(items: Sequence) -> list[str]:
    """Each item as one text (a pair's two joined), for what counts tokens (the length slices)."""
    texts, pairs = split_items(items)
    if pairs is None:
        return texts
    return joined_texts(texts, pairs)


def pair_examples(
    items: Sequence,
    labels: np.ndarray,
    predicted: np.ndarray,
    names: Sequence[str],
    shown: int = EXAMPLES_SHOWN,
) -> tuple[dict, ...]:
    """The first `shown` test pairs (none for single sentences): both texts, the label, the answer."""
    texts, pairs = split_items(items)
    if pairs is None:
        return ()
    return tuple(
        {
            "text": texts[i],
            "text_pair": pairs[i],
            "label": names[int(labels[i])],
            "predicted": names[int(predicted[i])],
        }
        for i in range(min(shown, len(texts)))
    )


def card_lines(examples: Sequence[dict], text_pair_column: str | None) -> list[str]:
    """The model card's lines on a pairs task: what it reads, and the example pairs as a table."""
    if not examples and not text_pair_column:
        return []
    lines = [
        "",
        "## Task: sentence pairs",
        f"Each row's two texts are read together (the second from the data's column `{text_pair_column}`); "
        f"the server takes them as the inputs `text` and `{TEXT_PAIR_INPUT}`, the pyfunc as the columns "
        f"`text` and `{TEXT_PAIR_INPUT}`.",
        "",
        "| text | text_pair | label | served answer |",
        "| --- | --- | --- | --- |",
    ]
    cell = lambda value: str(value).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines += [
        f"| {cell(e['text'])} | {cell(e['text_pair'])} | {cell(e['label'])} | {cell(e['predicted'])} |"
        for e in examples
    ]
    return lines
