"""The token features of a sentence: what the server's capture records per request and the monitor
computes for the training data, so drift compares like with like."""

from __future__ import annotations

from collections.abc import Sequence

UNKNOWN_TOKENS = ("[UNK]", "<unk>", "<UNK>")


def text_features(tokenizer, texts: Sequence[str]) -> list[tuple[int, int, int]]:
    """(tokens, words, out-of-vocabulary words) per text: tokens without special tokens; a word is out of
    vocabulary when the vocabulary does not hold it whole (it became the unknown token or was cut into
    pieces)."""
    unk = unknown_id(tokenizer)
    out = []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        pieces: dict[int, int] = {}
        unknown: set[int] = set()
        for token_id, word in zip(encoding.ids, encoding.word_ids, strict=True):
            if word is None:
                continue
            pieces[word] = pieces.get(word, 0) + 1
            if token_id == unk:
                unknown.add(word)
        oov = sum(1 for word, count in pieces.items() if count > 1 or word in unknown)
        out.append((len(encoding.ids), len(pieces), oov))
    return out


def unknown_id(tokenizer) -> int | None:
    """The id of the vocabulary's unknown token, whichever spelling it uses; None if it has none."""
    for token in UNKNOWN_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return None
