"""Value types of the session vocabulary: identifiers, enums, limits."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt
from pydantic.alias_generators import to_camel

# Explicit, documented limits (docs/invariants.md, limits).
MAX_KEY_LENGTH = 512
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 4096
MAX_ENTRY_BYTES = 256 * 1024
MAX_BATCH_EVENTS = 1000

Writer = Literal["runner", "heartbeat", "cron", "ingress", "admin", "system"]
Trigger = Literal["user", "heartbeat", "cron", "system", "subagent"]
RunOutcome = Literal["done", "killed", "timeout", "interrupted"]
Status = Literal["new", "running", "done", "failed", "killed", "timeout", "interrupted"]
Role = Literal["user", "assistant", "toolResult", "bashExecution", "system", "custom"]
ResetReason = Literal["new", "reset", "daily", "idle", "admin"]
Interaction = Literal["user", "heartbeat", "cron", "system"]
GenerationState = Literal["current", "archived", "deleted"]

# A soft rollover rotates the runtime but carries bindings and overrides;
# every other reason is a hard reset that carries only the lineage link.
SOFT_REASONS: frozenset[str] = frozenset({"idle"})


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def no_control_characters(value: str) -> str:
    """`value` itself, or ValueError if it holds a control character."""
    # A printable string holds no control character (they are all unprintable): one C
    # call for nearly every identifier instead of a regex search.
    if not value.isprintable() and _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


SessionKey = Annotated[
    str,
    Field(min_length=1, max_length=MAX_KEY_LENGTH),
    AfterValidator(no_control_characters),
]
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(no_control_characters),
]
ShortText = Annotated[str, Field(max_length=MAX_TEXT_LENGTH)]

_MINUTE = timedelta(minutes=1)


def in_utc(value: datetime) -> datetime:
    """The same instant in UTC. Refused (ValueError: a validation error naming the
    field) when its UTC date falls outside the years 1-9999 a datetime can hold, as
    "0001-01-01T00:00:00+01:00" does: the fold and the reads convert to UTC."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a time whose UTC date is within the years 1 to 9999") from None


def _offset_in_whole_minutes(value: datetime) -> datetime:
    # JSON (and so the log) writes a UTC offset to the minute: a finer one, which only
    # the Python API can pass, would be cut and move the stored instant off the one the
    # live projection folded. Such a time is kept in UTC instead; the instant is the same.
    offset = value.utcoffset()
    if offset is not None and offset % _MINUTE:
        return in_utc(value)
    if value.year == 1 or value.year == 9999:  # only there can its UTC date leave the range
        in_utc(value)
    return value


# An aware time whose offset the log can write exactly, and that UTC can hold.
Instant = Annotated[AwareDatetime, AfterValidator(_offset_in_whole_minutes)]


class Model(BaseModel):
    """Base for immutable, strictly validated value objects with camelCase JSON."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
    )


class Usage(Model):
    input: NonNegativeInt = 0
    output: NonNegativeInt = 0
    cache_read: NonNegativeInt = 0
    cache_write: NonNegativeInt = 0


def canonical_json(value: Any) -> bytes:
    """Stable JSON bytes (sorted keys, compact, UTF-8): the basis of fingerprints and hash
    chains, so it must never change. orjson for speed; integers beyond 64 bits, which it
    refuses, take the stdlib path (the same value always takes the same path)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(*parts: bytes) -> str:
    if len(parts) == 1:
        return hashlib.sha256(parts[0]).hexdigest()
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class KeyShape:
    """Agent, channel and kind parsed from an `agent:<agent>:<channel>:<kind>:…` key."""

    agent: str | None
    channel: str | None
    kind: str | None

    @classmethod
    def parse(cls, session_key: str) -> KeyShape:
        parts = session_key.split(":")
        if parts[0] == "agent" and len(parts) >= 3 and parts[1]:
            if len(parts) == 3:  # agent:<agent>:main and the like
                return cls(agent=parts[1], channel=None, kind=parts[2] or None)
            return cls(agent=parts[1], channel=parts[2] or None, kind=parts[3] or None)
        if len(parts) >= 2 and parts[0] in {"cron", "hook"}:
            return cls(agent=None, channel=parts[0], kind=parts[0])
        return cls(agent=None, channel=None, kind=None)
