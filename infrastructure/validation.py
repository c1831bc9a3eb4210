"""Input validated at the edge: every problem named by its field path, nothing recorded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from sessionledger.domain.errors import InvalidEvent, LimitExceeded
from sessionledger.domain.events import INCOMING_TYPES, Fact, IncomingFact
from sessionledger.domain.values import MAX_BATCH_EVENTS, Identifier, SessionKey
from sessionledger.infrastructure.identifiers import owners
from sessionledger.infrastructure.unit_of_work import UnitOfWork

_FACTS: TypeAdapter[Any] = TypeAdapter(IncomingFact)
# What _FACTS.validate_python calls with its defaults, without its per-call wrapper.
_validate_fact = _FACTS.validator.validate_python
_KEY: TypeAdapter[str] = TypeAdapter(SessionKey)
_ID: TypeAdapter[str] = TypeAdapter(Identifier)


def check_new_session_id(uow: UnitOfWork, session_id: str | None) -> None:
    """Refuse a sessionId a caller chose for a new generation if it is not an identifier
    or any key, this one included, used it already (the store's identifiers)."""
    if session_id is None:
        return
    try:
        _ID.validate_python(session_id)
    except ValidationError as e:
        raise InvalidEvent("sessionId", e.errors()[0]["msg"]) from None
    if owners(uow.connection, "sessionId", (session_id,)):
        raise InvalidEvent("sessionId", f"{session_id!r} is already used")


def checked_session_key(value: str) -> str:
    try:
        return _KEY.validate_python(value)
    except ValidationError as e:
        raise InvalidEvent("sessionKey", e.errors()[0]["msg"]) from None


def parse_batch(events: Iterable[Fact | Mapping[str, Any]]) -> list[Fact]:
    """Validate a batch at the edge; every problem is reported with its field path."""
    items = list(events)
    if len(items) > MAX_BATCH_EVENTS:
        raise LimitExceeded("events", f"holds {len(items)} events; at most {MAX_BATCH_EVENTS}")
    if not items:
        raise InvalidEvent("events", "must hold at least 1 event")
    # Ledger.record validates inside the batch's window of the collector at ease.
    return _parse(items)


def _parse(items: list[Fact | Mapping[str, Any]]) -> list[Fact]:
    facts: list[Fact] = []
    problems: list[dict[str, object]] = []
    for index, item in enumerate(items):
        # type() first: isinstance on a pydantic class goes through its metaclass.
        if type(item) is not dict and isinstance(item, Fact):
            if item.type not in INCOMING_TYPES:
                problems.append(
                    {
                        "field": f"events[{index}].type",
                        "message": f"{item.type!r} cannot be reported in a batch",
                    }
                )
            facts.append(item)
            continue
        try:
            facts.append(_validate_fact(item))
        except ValidationError as e:
            for detail in e.errors(include_url=False):
                problems.append(
                    {
                        "field": _field_path(index, detail),
                        "message": detail["msg"],
                        "type": detail["type"],
                    }
                )
    if problems:
        first = problems[0]
        too_large = any(p.get("type") == "too_large" for p in problems)
        for problem in problems:
            problem.pop("type", None)
        kind = LimitExceeded if too_large else InvalidEvent
        raise kind(str(first["field"]), str(first["message"]), problems)
    return facts


def _field_path(index: int, error: Any) -> str:
    loc = list(error["loc"])
    if error["type"] in {"union_tag_not_found", "union_tag_invalid"}:
        loc = ["type"]
    elif loc and isinstance(loc[0], str) and "." in loc[0]:
        loc = loc[1:]  # the discriminator value pydantic puts first
    path = f"events[{index}]"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
