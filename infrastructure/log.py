"""Reads the event log (the library's events table) in position order, as domain events.

SQLAlchemy Core selects on the caller's connection; the mapper decodes each event
from its stored bytes.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper
from sqlalchemy import Row, Table, bindparam, func, literal_column, select

from sessionledger.domain.events import LedgerEvent
from sessionledger.infrastructure.mapper import PydanticMapper
from sessionledger.projections.projector import Executor, core


class EventLog:
    """Over the library's own events table (its record class's Table), not a copy of it."""

    def __init__(self, mapper: Mapper[UUID], events: Table) -> None:  # type: ignore[type-arg]
        assert isinstance(mapper, PydanticMapper), mapper
        self.mapper = mapper
        self.events = events
        c = events.c
        columns = (c.id, c.originator_id, c.originator_version, c.topic, c.state)
        self._columns = columns
        self._page = (
            select(*columns)
            .where(c.id > bindparam("after"))
            .order_by(c.id)
            .limit(bindparam("limit"))
        )
        self._aggregate = (
            select(*columns)
            .where(c.originator_id == bindparam("originator_id"))
            .order_by(c.originator_version)
        )

    def read(self, executor: Executor, after: int, limit: int) -> list[tuple[int, LedgerEvent]]:
        rows = core(executor).execute(self._page, {"after": after, "limit": limit})
        return [self._decode(row) for row in rows]

    def read_share(
        self, executor: Executor, share: int, shares: int, after: int, until: int, limit: int
    ) -> list[tuple[int, LedgerEvent]]:
        """The events after `after` up to `until` of the keys in share `share` of `shares`
        (by the aggregate id's last hex digit: uniform over keys), decided in SQL before
        anything is decoded. SQLite's (it stores the id's 16 bytes): a rebuild's worker
        reads its share this way (infrastructure/partition.py)."""
        digits = [d for d in "0123456789ABCDEF" if int(d, 16) % shares == share]
        c = self.events.c
        query = (
            select(*self._columns)
            .where(
                c.id > bindparam("after"),
                c.id <= bindparam("until"),
                func.substr(func.hex(c.originator_id), 32, 1).in_(
                    [literal_column(f"'{d}'") for d in digits]  # constants: no expanding IN
                ),
            )
            .order_by(c.id)
            .limit(bindparam("limit"))
        )
        rows = core(executor).execute(query, {"after": after, "until": until, "limit": limit})
        return [self._decode(row) for row in rows]

    def read_aggregate(
        self, executor: Executor, originator_id: UUID
    ) -> list[tuple[int, LedgerEvent]]:
        """One aggregate's (one sessionKey's) events, in log order."""
        rows = core(executor).execute(self._aggregate, {"originator_id": originator_id})
        return [self._decode(row) for row in rows]

    def _decode(self, row: Row[Any]) -> tuple[int, LedgerEvent]:
        position, originator_id, version, topic, state = row
        event: LedgerEvent = self.mapper.decode(  # type: ignore[assignment]
            topic, originator_id, version, state
        )
        return position, event
