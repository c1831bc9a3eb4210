"""The `eventsourcing` Application behind the ledger, persisted with eventsourcing-sqlalchemy.

The library's datastore is handed our scoped SQLAlchemy session, so its recorders
write inside the transaction the Ledger opens: events, snapshots, read models and
the tracking position commit together or not at all. Tables come from migrations
(CREATE_TABLE=no), never from the library.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import InfrastructureFactory, Mapper, Recording, StoredEvent
from eventsourcing.utils import Environment
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import (
    SQLAlchemyAggregateRecorder,
    SQLAlchemyApplicationRecorder,
)
from sqlalchemy import Select, Table, bindparam, insert, select
from sqlalchemy.orm import Session, scoped_session

from domain.conversation import Conversation, conversation_id, project_conversation
from domain.events import Recorded
from infrastructure.mapper import OrjsonTranscoder, PydanticMapper
from infrastructure.settings import AGGREGATE_CACHE_SIZE, SNAPSHOT_INTERVAL


@lru_cache(maxsize=64)
def _select_events(table: Table, gt: bool, lte: bool, desc: bool, limit: int | None) -> Select:  # type: ignore[type-arg]
    c = table.c
    query = select(c.originator_id, c.originator_version, c.topic, c.state).where(
        c.originator_id == bindparam("originator_id", type_=c.originator_id.type)
    )
    if gt:
        query = query.where(c.originator_version > bindparam("gt"))
    if lte:
        query = query.where(c.originator_version <= bindparam("lte"))
    query = query.order_by(c.originator_version.desc() if desc else c.originator_version)
    return query.limit(limit) if limit is not None else query


class _CoreSelect:
    """The library's `select_events` (same filters, same order) as one prebuilt Core
    statement: its ORM query cost more than the database on every cache fast-forward."""

    events_record_cls: Any
    transaction: Any  # the library recorder's

    def select_events(
        self,
        originator_id: UUID | str,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        query = _select_events(
            self.events_record_cls.__table__, gt is not None, lte is not None, desc, limit
        )
        with self.transaction(commit=False) as session:
            rows = session.connection().execute(
                query, {"originator_id": originator_id, "gt": gt, "lte": lte}
            )
            return [
                StoredEvent(
                    originator_id=row[0],
                    originator_version=row[1],
                    topic=row[2],
                    state=bytes(row[3]) if isinstance(row[3], memoryview) else row[3],
                )
                for row in rows
            ]


class LedgerSnapshotRecorder(_CoreSelect, SQLAlchemyAggregateRecorder):  # type: ignore[misc]
    def _insert_stored_events(
        self, session: Session, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        if stored_events:
            session.connection().execute(
                insert(self.events_record_cls.__table__), [_values(e) for e in stored_events]
            )


class LedgerEventRecorder(_CoreSelect, SQLAlchemyApplicationRecorder):  # type: ignore[misc]
    """The library's recorder on the library's table, inserting a batch as one Core
    executemany (SQLAlchemy's insertmanyvalues, RETURNING the ids in parameter order)
    instead of one ORM object per event."""

    def _insert_stored_events(
        self, session: Session, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int]:
        if not stored_events:
            return []
        table = self.events_record_cls.__table__
        self._lock_table(session)
        rows = session.connection().execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True),
            [_values(e) for e in stored_events],
        )
        ids = [row[0] for row in rows]
        self._notify_channel(session)
        return ids


def _values(event: StoredEvent) -> dict[str, Any]:
    return {
        "originator_id": event.originator_id,
        "originator_version": event.originator_version,
        "topic": event.topic,
        "state": event.state,
    }


class LedgerFactory(SQLAlchemyFactory):
    """The library's SQLAlchemy factory, bound to a session we manage."""

    aggregate_recorder_class = LedgerSnapshotRecorder
    application_recorder_class = LedgerEventRecorder

    def __init__(self, env: Environment, session: scoped_session) -> None:  # type: ignore[type-arg]
        InfrastructureFactory.__init__(self, env)
        self._schema_name = None
        self.datastore = self.datastore_class(session=session)


# The library defines its record classes lazily in a process-wide registry that is not
# thread-safe: two ledgers constructed at once could both try to define the same table.
_CONSTRUCTION = threading.Lock()


class LedgerApplication(Application[UUID]):
    name = "SessionLedger"  # table prefix: sessionledger_events, sessionledger_snapshots

    def __init__(self, session: scoped_session, cache_size: int = AGGREGATE_CACHE_SIZE) -> None:  # type: ignore[type-arg]
        self._session = session
        with _CONSTRUCTION:
            self._construct(cache_size)
        session.remove()  # the datastore touched the registry while binding

    def _construct(self, cache_size: int) -> None:
        super().__init__(
            env={
                "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
                "CREATE_TABLE": "no",
                "IS_SNAPSHOTTING_ENABLED": "yes",
                "AGGREGATE_CACHE_MAXSIZE": str(cache_size),
                "AGGREGATE_CACHE_FASTFORWARD": "yes",
                # Commands mutate the cached aggregate in place; a failed transaction
                # evicts it (see forget) instead of paying a deepcopy per command.
                "DEEPCOPY_FROM_AGGREGATE_CACHE": "no",
            }
        )

    def construct_factory(self, env: Environment) -> InfrastructureFactory:  # type: ignore[type-arg, override]
        return LedgerFactory(env, self._session)  # type: ignore[return-value]

    def construct_mapper(self) -> Mapper[UUID]:
        return PydanticMapper(transcoder=OrjsonTranscoder())

    @property
    def events_table(self) -> Table:
        """The library's events table, as its recorder defines it."""
        recorder = cast(SQLAlchemyApplicationRecorder, self.recorder)
        table: Table = recorder.events_record_cls.__table__
        return table

    def conversation(self, session_key: str) -> Conversation | None:
        try:
            conversation: Conversation = self.repository.get(
                conversation_id(session_key), projector_func=project_conversation
            )
        except AggregateNotFoundError:
            return None
        return conversation

    def save_conversations(
        self, events: list[Recorded], touched: list[Conversation]
    ) -> list[Recording[UUID]]:
        """Record events in the given (decision) order; snapshot aggregates that crossed
        an interval. EventStore.put is what Application.save does underneath, minus its
        per-event runtime-protocol checks, which dominated batch ingest."""
        recordings = self.events.put(events)  # type: ignore[arg-type]
        assert self.snapshots is not None
        added = Counter(event.originator_id for event in events)
        for conversation in touched:
            before = conversation.version - added[conversation.id]
            if conversation.version // SNAPSHOT_INTERVAL > before // SNAPSHOT_INTERVAL:
                self.snapshots.put([conversation.take_snapshot()])
        return recordings

    def forget(self, ids: list[UUID]) -> None:
        """Evict aggregates a failed transaction may have mutated."""
        cache = self.repository.cache
        if cache is None:
            return
        for aggregate_id in ids:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)
