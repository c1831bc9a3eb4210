"""Reads the event log (the library's events table) in position order, as domain events.

On the DBAPI cursor (projections/raw.py) and decoded by the mapper straight from the
stored bytes: reading the log was a fifth of a rebuild and a third of an audit.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper
from sqlalchemy import Table, bindparam, func, literal_column, select

from sessionledger.domain.events import LedgerEvent
from sessionledger.infrastructure.mapper import PydanticMapper
from sessionledger.projections.projector import Executor, core
from sessionledger.projections.raw import RawSelect


def _originator(value: Any) -> UUID | str:
    """The originator id as the mapper takes it: SQLite stores its 16 bytes, which the
    mapper reads as hex without building a UUID; PostgreSQL returns a UUID."""
    return value.hex() if isinstance(value, bytes) else value


class EventLog:
    """Over the library's own events table (its record class's Table), not a copy of it."""

    def __init__(self, mapper: Mapper[UUID], events: Table) -> None:  # type: ignore[type-arg]
        assert isinstance(mapper, PydanticMapper), mapper
        self.mapper = mapper
        self.events = events
        c = events.c
        columns = (c.id, c.originator_id, c.originator_version, c.topic, c.state)
        # originator_id: the library's UUID type, not a read-model type.
        self._page = RawSelect(
            select(*columns)
            .where(c.id > bindparam("after"))
            .order_by(c.id)
            .limit(bindparam("limit")),
            decoders={1: _originator},
        )
        self._shares: dict[tuple[int, int], RawSelect] = {}
        self._aggregate = RawSelect(
            select(*columns)
            .where(c.originator_id == bindparam("originator_id"))
            .order_by(c.originator_version),
            decoders={1: _originator},
        )

    def read(self, executor: Executor, after: int, limit: int) -> list[tuple[int, LedgerEvent]]:
        return self._page.rows(core(executor), self._decode, after=after, limit=limit)

    def read_share(
        self, executor: Executor, share: int, shares: int, after: int, until: int, limit: int
    ) -> list[tuple[int, LedgerEvent]]:
        """The events after `after` up to `until` of the keys in share `share` of `shares`
        (by the aggregate id's last hex digit: uniform over keys), decided in SQL before
        anything is decoded. SQLite's (it stores the id's 16 bytes): a rebuild's worker
        reads its share this way (infrastructure/partition.py)."""
        query = self._shares.get((share, shares))
        if query is None:
            digits = [d for d in "0123456789ABCDEF" if int(d, 16) % shares == share]
            c = self.events.c
            query = self._shares[(share, shares)] = RawSelect(
                select(c.id, c.originator_id, c.originator_version, c.topic, c.state)
                .where(
                    c.id > bindparam("after"),
                    c.id <= bindparam("until"),
                    func.substr(func.hex(c.originator_id), 32, 1).in_(
                        [literal_column(f"'{d}'") for d in digits]  # constants: no expanding IN
                    ),
                )
                .order_by(c.id)
                .limit(bindparam("limit")),
                decoders={1: _originator},
            )
        return query.rows(core(executor), self._decode, after=after, until=until, limit=limit)

    def read_aggregate(
        self, executor: Executor, originator_id: UUID
    ) -> list[tuple[int, LedgerEvent]]:
        """One aggregate's (one sessionKey's) events, in log order."""
        return self._aggregate.rows(core(executor), self._decode, originator_id=originator_id)

    def _decode(
        self, position: int, originator_id: UUID | str, version: int, topic: str, state: bytes
    ) -> tuple[int, LedgerEvent]:
        event: LedgerEvent = self.mapper.decode(  # type: ignore[assignment]
            topic, originator_id, version, state
        )
        return position, event
