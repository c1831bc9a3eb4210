"""Reads the event log (the library's events table) in position order, as domain events."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from sqlalchemy import Table, select

from domain.events import LedgerEvent
from projections.projector import Executor


class EventLog:
    """Over the library's own events table (its record class's Table), not a copy of it."""

    def __init__(self, mapper: Mapper, events: Table) -> None:  # type: ignore[type-arg]
        self.mapper = mapper
        self.events = events

    def read(self, executor: Executor, after: int, limit: int) -> list[tuple[int, LedgerEvent]]:
        rows = executor.execute(
            select(self.events)
            .where(self.events.c.id > after)
            .order_by(self.events.c.id)
            .limit(limit)
        )
        return self._decode(rows)

    def read_aggregate(
        self, executor: Executor, originator_id: UUID
    ) -> list[tuple[int, LedgerEvent]]:
        """One aggregate's (one sessionKey's) events, in log order."""
        rows = executor.execute(
            select(self.events)
            .where(self.events.c.originator_id == originator_id)
            .order_by(self.events.c.originator_version)
        )
        return self._decode(rows)

    def _decode(self, rows: Any) -> list[tuple[int, LedgerEvent]]:
        return [
            (
                row.id,
                self.mapper.to_domain_event(  # type: ignore[misc]
                    StoredEvent(
                        originator_id=row.originator_id,
                        originator_version=row.originator_version,
                        topic=row.topic,
                        state=bytes(row.state),
                    )
                ),
            )
            for row in rows
        ]
