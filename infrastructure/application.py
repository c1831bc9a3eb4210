"""The `eventsourcing` Application behind the ledger, persisted with eventsourcing-sqlalchemy.

The library's recorders run on the Core connection of the write transaction the
Ledger opens (`Database.writing`), so events, snapshots, read models and the
tracking position commit together or not at all. Tables come from sessionledger.migrations
(CREATE_TABLE=no), never from the library.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, LRUCache
from eventsourcing.persistence import InfrastructureFactory, Mapper, StoredEvent
from eventsourcing.utils import Environment
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore, Transaction
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import (
    SQLAlchemyAggregateRecorder,
    SQLAlchemyApplicationRecorder,
)
from sqlalchemy import Connection, Select, Table, bindparam, insert, select
from sqlalchemy.orm import scoped_session, sessionmaker

from sessionledger.domain.conversation import Conversation, conversation_id, project_conversation
from sessionledger.domain.events import Recorded
from sessionledger.infrastructure.database import Database
from sessionledger.infrastructure.mapper import OrjsonTranscoder, Payload, PydanticMapper
from sessionledger.infrastructure.settings import AGGREGATE_CACHE_SIZE, SNAPSHOT_INTERVAL

# Other writers' events beyond this many since our last commit: clear the aggregate
# cache rather than evicting aggregate by aggregate.
EVICT_AT_MOST = 10_000


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


class _CoreRecorder:
    """The library's recorder, run on the Core connection of the caller's write
    transaction (`Database.writing`) instead of an ORM session: the same statements,
    same filters and order (the library's ORM query cost more than the database on
    every cache fast-forward). Outside a write transaction, reads take a
    read connection of their own."""

    events_record_cls: Any
    datastore: LedgerDatastore

    def transaction(self, commit: bool = True) -> Transaction:
        """What the library's own methods run in: inside our write transaction, an ORM
        session joined to it (made only if some library path asks for one)."""
        database = self.datastore.database
        if database.current is None:
            return self.datastore.transaction(commit=commit)
        return Transaction(database.session(), commit=commit, lock=None, is_scoped_session=True)

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
        parameters = {"originator_id": originator_id, "gt": gt, "lte": lte}
        database = self.datastore.database
        connection = database.current
        if connection is None:
            with database.reading() as reading:
                return _stored_events(reading.execute(query, parameters))
        return _stored_events(connection.execute(query, parameters))

    def _writing(self) -> Connection:
        connection = self.datastore.database.current
        if connection is None:
            raise RuntimeError("events are recorded only in a write transaction")
        return connection


def _stored_events(rows: Iterable[Any]) -> list[StoredEvent]:
    return [
        StoredEvent(
            originator_id=row[0],
            originator_version=row[1],
            topic=row[2],
            state=bytes(row[3]) if isinstance(row[3], memoryview) else row[3],
        )
        for row in rows
    ]


class LedgerSnapshotRecorder(_CoreRecorder, SQLAlchemyAggregateRecorder):  # type: ignore[misc]
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        if stored_events:
            self._writing().execute(
                insert(self.events_record_cls.__table__), [_values(e) for e in stored_events]
            )


class LedgerEventRecorder(_CoreRecorder, SQLAlchemyApplicationRecorder):  # type: ignore[misc]
    """The library's recorder on the library's table, inserting a batch as one
    executemany instead of one ORM object per event: SQLAlchemy's insertmanyvalues with
    RETURNING the ids in parameter order, then on PostgreSQL the library's NOTIFY. (The
    library's own `LOCK TABLE` before the insert is `Database.writing`'s first
    statement.)"""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        return self.insert_payloads(
            [(e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events]
        )

    def insert_payloads(self, payloads: Sequence[Payload]) -> list[int]:
        """`insert_events` of the events' payloads (`PydanticMapper.to_payloads`): their
        positions, in order."""
        if not payloads:
            return []
        table = self.events_record_cls.__table__
        connection = self._writing()
        rows = connection.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True),
            [dict(zip(_STORED_EVENT_FIELDS, payload, strict=True)) for payload in payloads],
        )
        ids = [row[0] for row in rows]
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"NOTIFY {self.channel_name};")
        return ids


_STORED_EVENT_FIELDS = ("originator_id", "originator_version", "topic", "state")


def _changed_since(events: Table) -> Select:  # type: ignore[type-arg]
    return (
        select(events.c.originator_id)
        .where(events.c.id > bindparam("after"), events.c.id <= bindparam("head"))
        .distinct()
    )


def _values(event: StoredEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _STORED_EVENT_FIELDS}


class LedgerDatastore(SQLAlchemyDatastore):
    """The library's datastore, knowing our Database: recorders write in its write
    transaction. The library's own session (`scoped_session`) serves only library
    methods we do not override, outside a write transaction."""

    database: Database


class LedgerFactory(SQLAlchemyFactory):
    """The library's SQLAlchemy factory, bound to our Database."""

    datastore_class = LedgerDatastore
    aggregate_recorder_class = LedgerSnapshotRecorder
    application_recorder_class = LedgerEventRecorder

    def __init__(self, env: Environment, database: Database) -> None:
        InfrastructureFactory.__init__(self, env)
        self._schema_name = None
        self.datastore = datastore = LedgerDatastore(
            session=scoped_session(sessionmaker(bind=database.engine, autoflush=False))
        )
        datastore.database = database


# The library defines its record classes lazily in a process-wide registry that is not
# thread-safe: two ledgers constructed at once could both try to define the same table.
_CONSTRUCTION = threading.Lock()


def snapshot_interval(version: int) -> int:
    """Events between an aggregate's snapshots around `version`: SNAPSHOT_INTERVAL, and
    once a key's history is long (from 2,048 events), the power of two between a
    sixteenth and an eighth of it. A conversation's state holds every entry id of its
    generations, so a snapshot grows with the transcript: at a fixed interval a
    10,000-entry key wrote a ~1 MB snapshot every 100 events, O(n²) bytes over its
    life. Intervals proportional to the version bound the snapshot bytes per event,
    and a cold load replays at most an eighth of the history after the snapshot it
    starts from (which it had to read whole anyway)."""
    return max(SNAPSHOT_INTERVAL, 1 << max(0, version.bit_length() - 4))


def snapshot_due(before: int, after: int) -> bool:
    """Whether an aggregate that went from version `before` to `after` crossed a
    snapshot point (a multiple of the interval at `after`)."""
    step = snapshot_interval(after)
    return after // step > before // step


class LedgerApplication(Application[UUID]):
    name = "SessionLedger"  # table prefix: sessionledger_events, sessionledger_snapshots

    def __init__(self, database: Database, cache_size: int = AGGREGATE_CACHE_SIZE) -> None:
        self._database = database
        # The log head the aggregate cache is current with (None: not known).
        self._cache_head: int | None = None
        self._synchronised_head: int | None = None
        with _CONSTRUCTION:
            self._construct(cache_size)

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
        return LedgerFactory(env, self._database)  # type: ignore[return-value]

    def construct_mapper(self) -> Mapper[UUID]:
        return PydanticMapper(transcoder=OrjsonTranscoder())

    @property
    def events_table(self) -> Table:
        """The library's events table, as its recorder defines it."""
        recorder = cast(SQLAlchemyApplicationRecorder, self.recorder)
        table: Table = recorder.events_record_cls.__table__
        return table

    def synchronise(self, connection: Connection, head: int) -> bool:
        """Bring the aggregate cache up to the log head, at a write transaction's start;
        True if no other writer had written since this process's last commit.

        In that (usual) case there is nothing to do, and cached aggregates need no
        fast-forward query per command; otherwise the aggregates those writers changed
        are evicted."""
        known = self._cache_head
        fresh = known == head
        if not fresh:
            cache = cast(LRUCache[UUID, Any], self.repository.cache)
            if known is None or head < known or head - known > EVICT_AT_MOST:
                cache.clear()
            else:
                for (aggregate_id,) in connection.execute(
                    _changed_since(self.events_table), {"after": known, "head": head}
                ):
                    with contextlib.suppress(KeyError):
                        cache.get(aggregate_id, evict=True)
        self._cache_head = self._synchronised_head = head
        return fresh

    def recorded_up_to(self, position: int) -> None:
        """This transaction wrote the log up to `position` (cached aggregates included)."""
        self._cache_head = position

    def conversation(self, session_key: str) -> Conversation | None:
        aggregate_id = conversation_id(session_key)
        cached = self.repository.cache
        if cached is not None and self._cache_head is not None:
            # Current by `synchronise`: no fast-forward query.
            try:
                aggregate = cached.get(aggregate_id)
            except KeyError:
                pass
            else:
                if aggregate is not None:
                    return cast(Conversation, aggregate)
        try:
            conversation: Conversation = self.repository.get(
                aggregate_id, projector_func=project_conversation
            )
        except AggregateNotFoundError:
            return None
        return conversation

    def save_conversations(
        self, events: list[Recorded], changed: list[tuple[Conversation, int]]
    ) -> list[tuple[int, Recorded]]:
        """Record events in the given (decision) order, answering (position, event) pairs;
        snapshot aggregates that crossed an interval (`changed`: each aggregate that added
        events, with its version before them). This is EventStore.put (what
        Application.save does underneath) minus its per-event runtime-protocol checks
        and Recording objects, which dominated batch ingest."""
        mapper = cast(PydanticMapper, self.mapper)
        recorder = cast(LedgerEventRecorder, self.recorder)
        positions = recorder.insert_payloads(mapper.to_payloads(events))
        assert positions is not None and len(positions) == len(events)
        assert self.snapshots is not None
        for conversation, before in changed:
            if snapshot_due(before, conversation.version):
                self.snapshots.put([conversation.take_snapshot()])
        return list(zip(positions, events, strict=True))

    def forget(self, ids: Iterable[UUID]) -> None:
        """Evict aggregates a failed transaction may have mutated; the rest of the cache
        is as current as it was when the transaction started (nothing of it committed)."""
        self._cache_head = self._synchronised_head
        cache = self.repository.cache
        if cache is None:
            return
        for aggregate_id in ids:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)
