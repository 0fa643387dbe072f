"""KServe v2 / Triton raw BYTES tensor encoding: each element is a 4-byte little-endian length + bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterable

_LEN = struct.Struct("<I")


class CodecError(ValueError):
    """Raw tensor bytes do not follow the BYTES encoding."""


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    """Split a raw BYTES tensor into its elements; raise CodecError on truncated data."""
    view = memoryview(raw)
    items: list[bytes] = []
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < _LEN.size:
            raise CodecError(f"truncated length prefix at byte {offset}")
        (length,) = _LEN.unpack_from(view, offset)
        offset += _LEN.size
        if length > end - offset:
            raise CodecError(f"element {len(items)} declares {length} bytes but only {end - offset} remain")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def encode_bytes_tensor(items: Iterable[bytes]) -> bytes:
    """Inverse of decode_bytes_tensor (used by tests and clients)."""
    return b"".join(_LEN.pack(len(item)) + item for item in items)
