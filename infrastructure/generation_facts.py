"""Facts a command builds itself about a key's current generation (a binding set or
dropped), recorded as a `record` of that one fact would be. The Python API's binding
commands and the bindings check (infrastructure.maintenance.bindings) record them here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sessionledger.domain.conversation import new_id
from sessionledger.domain.errors import InvalidEvent, SessionDeleted
from sessionledger.domain.events import Fact
from sessionledger.domain.values import Writer
from sessionledger.infrastructure.batch import RecordResult, record_batch
from sessionledger.infrastructure.store import Store
from sessionledger.infrastructure.unit_of_work import UnitOfWork
from sessionledger.infrastructure.validation import checked_session_key, invalid_input


def record_about_current(
    store: Store,
    session_key: str,
    fact_class: type[Fact],
    *,
    at: datetime,
    writer: Writer,
    **fields: Any,
) -> RecordResult:
    """Record a `fact_class` fact about the current generation of `session_key`, in one
    write transaction. UnknownSession or SessionDeleted when the key has no current
    generation; InvalidEvent naming the field when `fields` do not make a valid fact or
    the aggregate rejects it."""
    key = checked_session_key(session_key)

    def decide(uow: UnitOfWork) -> list[RecordResult]:
        conversation = uow.existing(key)
        session_id = conversation.current_session_id
        if session_id is None:
            raise SessionDeleted(key, conversation.last_session_id)
        try:
            fact = fact_class(
                event_id=new_id(),
                session_key=key,
                session_id=session_id,
                occurred_at=at,
                writer=writer,
                **fields,
            )
        except ValidationError as e:
            raise invalid_input(e.errors(include_url=False), whole="event") from None
        return record_batch(uow, [fact])

    (result,) = store.transact(decide)
    if result.outcome == "rejected":
        field_name, _, message = (result.reason or "").partition(": ")
        raise InvalidEvent(field_name or "event", message or "rejected")
    return result
