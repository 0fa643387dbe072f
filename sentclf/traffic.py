"""Served traffic as the server's capture writes it (CAPTURE_DIR: JSON lines, see
server/sentclf_server/capture.py), and the features the monitor compares with training data.

`text_features` is the server's own function, repeated here because the server imports nothing of the
project; tests/server/test_server_capture.py holds the two equal.
"""

import json
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

CAPTURE_GLOB = "capture-*.jsonl"
# Who answered, in each record (the server writes them; records from before two-version serving lack the
# last four and simply have no labels): the served model name, the version that produced the record, its
# predicted class index, the request's id (the caller's Open Inference Protocol id, or the server's), the
# sentence's position in the request, whether the answer went back to the caller (false: a shadow answer),
# and the route that chose the version.
MODEL_FIELD = "model"
VERSION_FIELD = "version"
PREDICTED_FIELD = "label"
REQUEST_ID_FIELD = "id"
SENTENCE_INDEX_FIELD = "index"
SERVED_FIELD = "served"
ROUTE_FIELD = "route"
ROUTES = ("champion", "challenger", "shadow", "direct")
_SINCE = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def text_features(tokenizer, texts: Sequence[str]) -> list[tuple[int, int, int]]:
    """(tokens, words, out-of-vocabulary words) per text: tokens without special tokens; a word is out of
    vocabulary when the vocabulary does not hold it whole (the unknown token, or cut into pieces)."""
    unk = _unknown_id(tokenizer)
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


def _unknown_id(tokenizer) -> int | None:
    for token in ("[UNK]", "<unk>", "<UNK>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return None


def parse_since(since: str) -> timedelta | None:
    """`24h`, `30m`, `7d`, `2w`, `90s` -> a timedelta; `all` (or empty) -> None (the whole folder)."""
    text = since.strip().lower()
    if text in ("", "all"):
        return None
    match = _SINCE.match(text)
    if not match:
        raise ValueError(f"since={since!r}: give a window such as 24h, 30m, 7d, 2w, or `all`")
    return timedelta(**{_UNITS[match["unit"]]: float(match["amount"])})


def read_capture(folder: Path, since: timedelta | None, now: datetime | None = None) -> pd.DataFrame:
    """The records of `folder`'s capture files within the window (newest `since`), oldest first; lines
    that are not records (a file cut mid-line by a full disk) are skipped and counted in the log."""
    now = now or datetime.now(UTC)
    start = (now - since) if since is not None else None
    rows, bad = [], 0
    for path in sorted(folder.glob(CAPTURE_GLOB)):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                    record["time"] = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                        tzinfo=UTC
                    )
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                if start is None or record["time"] >= start:
                    rows.append(record)
    if bad:
        logger.warning("%d lines of %s are not capture records; skipped", bad, folder)
    frame = pd.DataFrame(rows)
    return frame.sort_values("time", kind="stable").reset_index(drop=True) if not frame.empty else frame
