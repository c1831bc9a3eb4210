"""The `eventsourcing` Application behind the ledger, persisted with eventsourcing-sqlalchemy.

The library's recorders run on the Core connection of the write transaction the
Ledger opens (`Database.write`), so events, snapshots, read models and the
tracking position commit together or not at all. Tables come from sessionledger.migrations
(CREATE_TABLE=no), never from the library.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar, cast
from uuid import UUID

import sqlalchemy.exc
from eventsourcing.application import AggregateNotFoundError, Application, LRUCache
from eventsourcing.persistence import (
    InfrastructureFactory,
    Mapper,
    Notification,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.utils import Environment
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore, exception_classes
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import (
    SQLAlchemyAggregateRecorder,
    SQLAlchemyApplicationRecorder,
)
from sqlalchemy import Connection, Row, Select, Table, bindparam, func, insert, select

from sessionledger.domain.conversation import Conversation, conversation_id, project_conversation
from sessionledger.domain.events import Recorded
from sessionledger.infrastructure.database import Database
from sessionledger.infrastructure.mapper import OrjsonTranscoder, Payload, PydanticMapper
from sessionledger.infrastructure.settings import AGGREGATE_CACHE_SIZE, SNAPSHOT_INTERVAL
from sessionledger.projections.raw import on_driver
from sessionledger.projections.statements import STATEMENTS

T = TypeVar("T")

# Other writers' events beyond this many since our last commit: clear the aggregate
# cache rather than evicting aggregate by aggregate.
EVICT_AT_MOST = 10_000


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


class _CoreRecorder:
    """The library's recorder, run on the Core connection of the caller's write
    transaction (`Database.write`) instead of an ORM session: the same statements,
    same filters and order, built once (the library's ORM query cost more than the
    database on every cache fast-forward). Outside a write transaction (the library's
    own use of a recorder, as in its test cases), reads take a read connection of their
    own and writes a write transaction of their own."""

    events_record_cls: Any
    datastore: LedgerDatastore

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
        return _stored_events(self._read(query, parameters))

    def _read(self, query: Select, parameters: dict[str, Any]) -> Sequence[Row[Any]]:  # type: ignore[type-arg]
        database = self.datastore.database
        connection = database.current
        if connection is None:
            with database.reading() as reading:
                return reading.execute(query, parameters).all()
        return connection.execute(query, parameters).all()

    def _write(self, write: Callable[[Connection], T]) -> T:
        """`write` on the connection of the caller's write transaction, else in a write
        transaction of its own, whose database errors are raised as the library's
        recorders raise them (its `IntegrityError` for a version already recorded)."""
        database = self.datastore.database
        connection = database.current
        if connection is not None:
            return write(connection)
        try:
            return database.write_once(write)
        except sqlalchemy.exc.SQLAlchemyError as error:
            library_error = exception_classes.get(type(error).__name__, PersistenceError)
            raise library_error(str(error)) from error


def _state(value: bytes | memoryview) -> bytes:
    """An event's stored state as bytes (a driver may read a binary column as a memoryview)."""
    return bytes(value) if isinstance(value, memoryview) else value


def _stored_events(rows: Iterable[Any]) -> list[StoredEvent]:
    return [
        StoredEvent(
            originator_id=row[0], originator_version=row[1], topic=row[2], state=_state(row[3])
        )
        for row in rows
    ]


class LedgerSnapshotRecorder(_CoreRecorder, SQLAlchemyAggregateRecorder):  # type: ignore[misc]
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        if stored_events:
            statement = insert(self.events_record_cls.__table__)
            values = [_values(e) for e in stored_events]
            self._write(lambda connection: connection.execute(statement, values))


class LedgerEventRecorder(_CoreRecorder, SQLAlchemyApplicationRecorder):  # type: ignore[misc]
    """The library's recorder on the library's table, inserting a batch as one
    executemany instead of one ORM object per event: on SQLite through the driver
    (projections.statements), on PostgreSQL as SQLAlchemy's insertmanyvalues with
    RETURNING the ids in parameter order, then the library's NOTIFY. (The library's
    own `LOCK TABLE` before the insert is the first statement of `Database.write`.)"""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        """The events' positions, in order."""
        if not stored_events:
            return []
        payloads = [
            (e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events
        ]
        return self._write(lambda connection: self._insert(connection, payloads))

    def _insert(self, connection: Connection, payloads: Sequence[Payload]) -> list[int]:
        table = self.events_record_cls.__table__
        if connection.dialect.name == "sqlite":
            statement = STATEMENTS.get(connection, _insert_event, table)
            # A batch's events belong to a few aggregates: each id is converted once.
            statement.memoize("originator_id")
            parameters = statement.tuples_parameters(payloads, _STORED_EVENT_FIELDS)
            last: int = (
                on_driver(connection, _insert_one, statement.sql, parameters[0])
                if len(parameters) == 1
                else on_driver(connection, _insert_many, statement.sql, parameters)
            )
            # The writer lock is ours (BEGIN IMMEDIATE) and ids autoincrement, so these
            # inserts took consecutive ids ending at the last one.
            return list(range(last - len(payloads) + 1, last + 1))
        rows = connection.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True),
            [dict(zip(_STORED_EVENT_FIELDS, payload, strict=True)) for payload in payloads],
        )
        ids = [row[0] for row in rows]
        notify = f"NOTIFY {self.channel_name};"
        on_driver(connection, _without_parameters, notify, None)
        return ids

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        c = self.events_record_cls.__table__.c
        query = select(c.id, c.originator_id, c.originator_version, c.topic, c.state)
        if start is not None:
            query = query.where(c.id >= start if inclusive_of_start else c.id > start)
        if stop is not None:
            query = query.where(c.id <= stop)
        if topics:
            query = query.where(c.topic.in_(topics))
        rows = self._read(query.order_by(c.id).limit(limit), {})
        return [
            Notification(
                id=row[0],
                originator_id=row[1],
                originator_version=row[2],
                topic=row[3],
                state=_state(row[4]),
            )
            for row in rows
        ]

    def max_notification_id(self) -> int | None:
        ((head,),) = self._read(select(func.max(self.events_record_cls.__table__.c.id)), {})
        return cast("int | None", head)


def _insert_one(cursor: Any, sql: str, parameters: Any) -> int:
    cursor.execute(sql, parameters)
    return int(cursor.lastrowid)  # pysqlite sets it for execute only


def _insert_many(cursor: Any, sql: str, parameters: Any) -> int:
    cursor.executemany(sql, parameters)
    cursor.execute("SELECT last_insert_rowid()")
    return int(cursor.fetchone()[0])


def _without_parameters(cursor: Any, sql: str, _: None) -> None:
    cursor.execute(sql)


def _insert_event(events: Table) -> Any:
    return insert(events).values({name: bindparam(name) for name in _STORED_EVENT_FIELDS})


_STORED_EVENT_FIELDS = ("originator_id", "originator_version", "topic", "state")


@lru_cache(maxsize=4)
def _changed_since(events: Table) -> Select:  # type: ignore[type-arg]
    return (
        select(events.c.originator_id)
        .where(events.c.id > bindparam("after"), events.c.id <= bindparam("head"))
        .distinct()
    )


def _values(event: StoredEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _STORED_EVENT_FIELDS}


class LedgerDatastore(SQLAlchemyDatastore):
    """The library's datastore, knowing our Database: the recorders write on the
    connection of its write transaction (`Database.current`)."""

    database: Database


class LedgerFactory(SQLAlchemyFactory):
    """The library's SQLAlchemy factory, its datastore on our Database's engine through
    the library's scoped-session hook: a transaction managed outside the application.
    Library code we do not override gets the ORM session of the caller's write
    transaction (`Database.sessions`), which the library neither begins nor commits.

    The documented hook (`SQLALCHEMY_SCOPED_SESSION_TOPIC`) resolves a topic to one
    process-wide session; ours is per Database, so it is handed to the datastore
    through `set_scoped_session`, which is what that hook does with the session it
    resolves."""

    datastore_class = LedgerDatastore
    aggregate_recorder_class = LedgerSnapshotRecorder
    application_recorder_class = LedgerEventRecorder

    def __init__(self, env: Environment, database: Database) -> None:
        # No SQLALCHEMY_URL in the environment: the datastore makes no engine of its own.
        super().__init__(env)
        datastore = cast(LedgerDatastore, self.datastore)
        datastore.set_scoped_session(database.sessions)
        # Reading the engine off the scoped session made this thread a session on it.
        database.sessions.remove()
        datastore.database = database


# A key's aggregate id, remembered for the keys the aggregate cache holds (uuid5 hashes
# the key with SHA-1 on every call).
_conversation_id = lru_cache(maxsize=AGGREGATE_CACHE_SIZE)(conversation_id)


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
        aggregate_id = _conversation_id(session_key)
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
        """Record events in the given (decision) order through the library's event store,
        answering (position, event) pairs; snapshot aggregates that crossed a snapshot
        point (`changed`: each aggregate that added events, with its version before them;
        `snapshot_due`)."""
        recordings = self.events.put(events)
        assert len(recordings) == len(events)
        assert self.snapshots is not None
        for conversation, before in changed:
            if snapshot_due(before, conversation.version):
                self.snapshots.put([conversation.take_snapshot()])
        return [
            (recording.notification.id, event)
            for recording, event in zip(recordings, events, strict=True)
        ]

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
