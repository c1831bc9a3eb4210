"""Input validated at the edge: every problem named by its field path, nothing recorded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

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
        raise invalid_input(e.errors(include_url=False), within=("sessionId",)) from None
    if owners(uow.connection, "sessionId", (session_id,)):
        raise InvalidEvent("sessionId", f"{session_id!r} is already used")


def checked_session_key(value: str) -> str:
    try:
        return _KEY.validate_python(value)
    except ValidationError as e:
        raise invalid_input(e.errors(include_url=False), within=("sessionKey",)) from None


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
    problems: list[ErrorDetails] = []
    for index, item in enumerate(items):
        # type() first: isinstance on a pydantic class goes through its metaclass.
        if type(item) is not dict and isinstance(item, Fact):
            if item.type not in INCOMING_TYPES:
                problems.append(
                    {
                        "type": "value_error",
                        "loc": ("events", index, "type"),
                        "msg": f"{item.type!r} cannot be reported in a batch",
                        "input": item.type,
                    }
                )
            facts.append(item)
            continue
        try:
            facts.append(_validate_fact(item))
        except ValidationError as e:
            for detail in e.errors(include_url=False):
                problems.append({**detail, "loc": ("events", index, *detail["loc"])})
    if problems:
        raise invalid_input(problems)
    return facts


# pydantic's error types for a tagged union's missing or unknown tag: the error is about
# the union's `type` field, which pydantic leaves out of the location.
_UNION_TAG = frozenset({"union_tag_not_found", "union_tag_invalid"})


def field_path(loc: Iterable[str | int]) -> str:
    """The field an error's location (pydantic's) names, as the caller wrote it.

    `('events', 3, 'run.ended', 'entry', 'role')` -> `'events[3].entry.role'`: list
    indexes in brackets, names joined by dots, and the tag pydantic inserts after the
    index of a tagged union's item (an event type such as `run.ended`) left out.
    "" for the input itself.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "." in part and path.endswith("]"):
            continue
        else:
            path += f".{part}" if path else part
    return path


def invalid_input(
    errors: Iterable[Mapping[str, Any]], within: tuple[str | int, ...] = (), whole: str = "body"
) -> InvalidEvent:
    """The one way a validation failure is reported (the Python API, HTTP and the CLI).

    Every error becomes `{"field", "message"}` in `details` (the field from
    `field_path` of `within` + the error's location, `whole` when that is empty); the
    exception's own field and message are the first error's. A `LimitExceeded` when a
    documented limit was crossed: an entry over its size (`too_large`) or a batch over
    `MAX_BATCH_EVENTS` events (a too-long `events`).
    """
    details: list[dict[str, object]] = []
    limit = False
    for error in errors:
        loc = (*within, *error["loc"])
        if error["type"] in _UNION_TAG:
            loc = (*loc, "type")
        details.append({"field": field_path(loc) or whole, "message": error["msg"]})
        limit = limit or error["type"] == "too_large"
        limit = limit or (error["type"] == "too_long" and loc == ("events",))
    first = details[0] if details else {"field": whole, "message": "invalid"}
    kind = LimitExceeded if limit else InvalidEvent
    return kind(str(first["field"]), str(first["message"]), details)
