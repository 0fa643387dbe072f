"""Served traffic as the server's capture writes it (CAPTURE_DIR: JSON lines, see
server/sentclf_server/capture.py), and the features the monitor compares with training data (the
runtime's `text_features`, the very function the server's capture runs).
"""

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from sentclf.contract import (
    MODEL_FIELD,
    PREDICTED_FIELD,
    REQUEST_ID_FIELD,
    ROUTE_FIELD,
    ROUTES,
    SENTENCE_INDEX_FIELD,
    SERVED_FIELD,
    VERSION_FIELD,
)
from sentclf_runtime.features import text_features

# The record fields are the contract's (sentclf.contract), re-exported beside the reader.
__all__ = [
    "CAPTURE_GLOB",
    "MODEL_FIELD",
    "PREDICTED_FIELD",
    "REQUEST_ID_FIELD",
    "ROUTE_FIELD",
    "ROUTES",
    "SENTENCE_INDEX_FIELD",
    "SERVED_FIELD",
    "VERSION_FIELD",
    "parse_since",
    "read_capture",
    "served_records",
    "text_features",
]

logger = logging.getLogger(__name__)

CAPTURE_GLOB = "capture-*.jsonl"
_SINCE = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


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


def served_records(frame: pd.DataFrame) -> pd.DataFrame:
    """The records whose answer went back to a caller: one per sentence the callers sent, whatever the route.
    A shadow answer (`served: false`) is a second answer to a sentence its served record already counts, so
    drift statistics leave it out; records from before two-version serving have no `served` and were all
    served."""
    if frame.empty or SERVED_FIELD not in frame:
        return frame
    served = frame[SERVED_FIELD].where(frame[SERVED_FIELD].notna(), True).astype(bool)
    return frame[served].reset_index(drop=True)
