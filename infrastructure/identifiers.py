"""Identifiers that name one session key store-wide: runIds and sessionIds.

A key's aggregate refuses a runId or sessionId its own lineage used; one used by
another key is the store's to refuse, and the database holds that rule:
`sessionledger_identifiers` (projections/tables.py `IDENTIFIERS`, migration 0013) has a
primary key on (field, identifier). The unit of work inserts the identifiers its events
introduce in the transaction that logs them (`claim`), and commands look an identifier
up before deciding (`owners`) to answer a clash as a rejection naming the field. Writers
hold the writer lock from their first statement, so what a lookup finds free stays free
until the transaction inserts it; the primary key is the backstop (a violation fails the
whole transaction, it never lets two keys share an identifier).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Literal

from sqlalchemy import Connection, insert, select

from sessionledger.domain.events import GenerationOpened, Recorded, RunStarted
from sessionledger.projections.tables import IDENTIFIERS

Field = Literal["runId", "sessionId"]

_c = IDENTIFIERS.c
_INSERT = insert(IDENTIFIERS)


def owners(connection: Connection, field: Field, identifiers: Collection[str]) -> dict[str, str]:
    """The keys that took those of `identifiers` already used, by identifier."""
    if not identifiers:
        return {}
    query = select(_c.identifier, _c.session_key).where(
        _c.field == field, _c.identifier.in_(list(identifiers))
    )
    return {identifier: key for identifier, key in connection.execute(query)}


def introduced(events: Iterable[Recorded]) -> list[dict[str, str]]:
    """The identifiers `events` introduce, as rows: a run's start its runId, a
    generation's opening its sessionId."""
    rows: list[dict[str, str]] = []
    for event in events:
        # Exact types: nothing subclasses them, and isinstance on a pydantic class goes
        # through its metaclass for every event that is not one (nearly all).
        if type(event) is RunStarted:
            rows.append(
                {"field": "runId", "identifier": event.run_id, "session_key": event.session_key}
            )
        elif type(event) is GenerationOpened:
            rows.append(
                {
                    "field": "sessionId",
                    "identifier": event.session_id,
                    "session_key": event.session_key,
                }
            )
    return rows


def claim(connection: Connection, events: Iterable[Recorded]) -> None:
    """Insert the identifiers `events` introduce, in the caller's transaction."""
    rows = introduced(events)
    if rows:
        connection.execute(_INSERT, rows)
