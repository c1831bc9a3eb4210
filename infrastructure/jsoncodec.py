"""JSON bytes for events and JSON columns: orjson for speed, the stdlib where orjson
would be wrong. orjson refuses integers beyond 64 bits when encoding and silently
turns them into floats when decoding; entry content may hold such integers."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# 20 or more digits in a row: possibly an integer beyond 64 bits (inside a string it is
# harmless, just slower). Shorter runs always fit in a signed or unsigned 64-bit int.
_LONG_NUMBER = re.compile(rb"\d{20,}")


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER.search(raw):
        return json.loads(raw)
    return orjson.loads(raw)


def dumps_text(value: Any) -> str:
    return dumps(value).decode()
