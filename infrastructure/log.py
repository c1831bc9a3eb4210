"""Reads the event log (the library's events table) in position order, as domain events."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, Table, Text, select
from sqlalchemy_utils.types.uuid import UUIDType

from domain.events import LedgerEvent
from projections.projector import Executor
from projections.tables import EVENTS_TABLE

EVENTS = Table(
    EVENTS_TABLE,
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("originator_id", UUIDType()),
    Column("originator_version", BigInteger),
    Column("topic", Text),
    Column("state", LargeBinary),
)


class EventLog:
    def __init__(self, mapper: Mapper) -> None:  # type: ignore[type-arg]
        self.mapper = mapper

    def read(self, executor: Executor, after: int, limit: int) -> list[tuple[int, LedgerEvent]]:
        rows = executor.execute(
            select(EVENTS).where(EVENTS.c.id > after).order_by(EVENTS.c.id).limit(limit)
        )
        return self._decode(rows)

    def read_aggregate(
        self, executor: Executor, originator_id: UUID
    ) -> list[tuple[int, LedgerEvent]]:
        """One aggregate's (one sessionKey's) events, in log order."""
        rows = executor.execute(
            select(EVENTS)
            .where(EVENTS.c.originator_id == originator_id)
            .order_by(EVENTS.c.originator_version)
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
