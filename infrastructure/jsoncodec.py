"""JSON bytes for events and JSON columns: orjson for speed, the stdlib where orjson
would be wrong. orjson refuses integers beyond 64 bits when encoding and silently
turns them into floats when decoding; entry content may hold such integers."""

from __future__ import annotations

import json
from typing import Any

import orjson

# Possibly an integer orjson cannot read exactly: 20 or more digits, or a negative one of
# 19 (below -2**63, -9223372036854775808); shorter ones fit in orjson's signed or unsigned
# 64-bit integers. Looked for as a run of 20 characters of `0-9` and `-` (each mapped to
# `0`): every such integer is one, and whatever else is (digits in a string, a phone
# number) only takes the exact parser, which is slower. The regex search this replaces
# (`\d{20,}|-\d{19}`) cost about 20 µs on a 700-byte event, the mapping about 1.
_DIGIT_OR_MINUS = bytes(48 if 48 <= b <= 57 or b == 45 else 32 for b in range(256))
_LONG_RUN = b"0" * 20


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def may_hold_long_integer(raw: bytes) -> bool:
    """True for JSON text that may hold an integer orjson cannot read exactly."""
    return _LONG_RUN in raw.translate(_DIGIT_OR_MINUS)


def loads(data: bytes | str | int | float) -> Any:
    """JSON text or bytes as Python values. A number is returned as it is: SQLite's
    numeric affinity stored a bare number written as text before `dumps_sqlite` (and so
    hands back a number, not JSON text)."""
    if isinstance(data, (int, float)):
        return data
    raw = data.encode() if isinstance(data, str) else data
    if may_hold_long_integer(raw):
        return json.loads(raw)
    return orjson.loads(raw)


def dumps_text(value: Any) -> str:
    return dumps(value).decode()


def dumps_sqlite(value: Any) -> str | bytes:
    """JSON for SQLite's JSON columns. Their declared type gives them numeric affinity:
    SQLite converts text that reads as a number into an INTEGER or REAL, and an integer
    beyond 64 bits (or a float's last digits) comes back changed. A bare number is
    bound as a BLOB, which affinity leaves alone; `loads` reads it like the text."""
    text = dumps(value)
    return text.decode() if text[:1] in _NOT_A_NUMBER else text


# How JSON text that is not a bare number starts: an object, array, string or literal.
_NOT_A_NUMBER = frozenset((b"{", b"[", b'"', b"t", b"f", b"n"))
