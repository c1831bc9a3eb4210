"""Engines, transactions and fault mapping for SQLite (embedded) and PostgreSQL.

Writers are serialised by the database itself, taken at the start of the
transaction: SQLite `BEGIN IMMEDIATE`, PostgreSQL `LOCK TABLE … IN EXCLUSIVE MODE`
on the events table (readers are not blocked). So every decision reads the state
it writes against, log positions commit in order, and co-tenant writers queue
instead of conflicting. Faults surface as `StoreUnavailable`, never half-written.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy.exc
from eventsourcing.persistence import IntegrityError as LibraryIntegrityError
from eventsourcing.persistence import PersistenceError
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from domain.errors import StoreUnavailable
from infrastructure import jsoncodec
from infrastructure.settings import BUSY_TIMEOUT_SECONDS
from projections.statements import driver_cursor
from projections.tables import EVENTS_TABLE

T = TypeVar("T")
log = logging.getLogger("sessionledger.database")

# Errors worth another attempt of the whole transaction (nothing of it was kept).
_RETRYABLE_PG_CODES = {"40001", "40P01"}  # serialization failure, deadlock
# lock_not_available: the writer lock was not ours within the busy timeout. Retrying would
# wait that long again, once per attempt; the store is locked, so say so.
_LOCKED_PG_CODES = {"55P03"}


class Database:
    def __init__(self, url: str, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.engine = _create_engine(url, busy_timeout)
        self.dialect = self.engine.dialect.name
        self.write_engine = self.engine.execution_options(ledger_write=True)
        self.sessions = scoped_session(
            sessionmaker(bind=self.write_engine, autoflush=False, expire_on_commit=False)
        )
        # SQLite's busy handler polls with back-off; this process's writers queue on a lock
        # instead. (Across processes SQLite's busy handler still decides; see docs.)
        self._process_write_lock = threading.Lock() if self.dialect == "sqlite" else None

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One write transaction, holding the database's writer lock from its start."""
        lock = self._process_write_lock
        if lock is not None and not lock.acquire(timeout=self.busy_timeout):
            raise StoreUnavailable("timed out waiting for this process's other writers")
        try:
            session = self.sessions()
            try:
                with session.begin():
                    if self.dialect == "postgresql":
                        # At least 1 ms: PostgreSQL reads a lock_timeout of 0 as "wait forever".
                        wait_ms = max(1, int(self.busy_timeout * 1000))
                        session.execute(text(f"SET LOCAL lock_timeout = '{wait_ms}ms'"))
                        session.execute(text(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE"))
                    yield session
            finally:
                self.sessions.remove()
        finally:
            if lock is not None:
                lock.release()

    def write(
        self,
        work: Callable[[Session], T],
        *,
        on_failure: Callable[[], None] | None = None,
        attempts: int = 5,
    ) -> T:
        """Run `work` in a write transaction, retrying transient conflicts inside the store."""
        for attempt in range(1, attempts + 1):
            try:
                with translate_faults(retry=True), self.writing() as session:
                    return work(session)
            except _Retry:
                if on_failure is not None:
                    on_failure()
                if attempt == attempts:
                    raise StoreUnavailable("the write kept conflicting; retry later") from None
                time.sleep(random.uniform(0, 0.01 * attempt))
            except BaseException:
                if on_failure is not None:
                    on_failure()  # whatever was cached from this transaction is void
                raise
        raise AssertionError("unreachable")

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only snapshot (SQLite deferred transaction, PostgreSQL read committed)."""
        with translate_faults(), self.engine.connect() as connection, connection.begin():
            yield connection

    def close(self) -> None:
        self.sessions.remove()
        self.engine.dispose()


class _Retry(Exception):
    pass


@contextmanager
def translate_faults(*, retry: bool = False) -> Iterator[None]:
    """Database faults become StoreUnavailable (or, inside `write`, a retry); bugs stay bugs."""
    try:
        yield
    except (sqlalchemy.exc.IntegrityError, LibraryIntegrityError) as e:
        # Writers are serialised, so a conflict here is unexpected: decide again, but say so.
        log.warning("write conflicted (%s); deciding again", _first_line(e))
        if retry:
            raise _Retry() from e
        raise StoreUnavailable(f"conflicting write: {_first_line(e)}") from e
    except sqlalchemy.exc.TimeoutError as e:
        # Every pooled connection stayed busy for the whole busy timeout.
        raise StoreUnavailable(f"database busy: {_first_line(e)}") from e
    except sqlalchemy.exc.DBAPIError as e:
        code = getattr(getattr(e, "orig", None), "sqlstate", None)
        if code in _RETRYABLE_PG_CODES and retry:
            raise _Retry() from e
        if code in _LOCKED_PG_CODES:
            raise StoreUnavailable(f"database locked: {_first_line(e)}") from e
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
            e.connection_invalidated
        ):
            raise StoreUnavailable(f"database unavailable: {_first_line(e)}") from e
        raise
    except PersistenceError as e:
        raise StoreUnavailable(f"database unavailable: {_first_line(e)}") from e


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _create_engine(url: str, busy_timeout: float) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database or ""
        in_memory = database in ("", ":memory:") or "mode=memory" in url
        engine = create_engine(
            url,
            json_serializer=jsoncodec.dumps_text,
            json_deserializer=jsoncodec.loads,
            connect_args={"timeout": busy_timeout, "check_same_thread": False},
            # A file's pool queues for connections; an in-memory one has a single one.
            **({} if in_memory else {"pool_timeout": busy_timeout}),
        )
        _configure_sqlite(engine, busy_timeout, None if in_memory else os.path.abspath(database))
        return engine
    # pool_timeout: waiting for a free connection is waiting for other writers too.
    return create_engine(
        url,
        json_serializer=jsoncodec.dumps_text,
        json_deserializer=jsoncodec.loads,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=busy_timeout,
    )


def _configure_sqlite(engine: Engine, busy_timeout: float, path: str | None) -> None:
    # The file this engine's first connection opened, as (device, inode). An open SQLite
    # connection keeps reading and writing its file after it is unlinked or replaced, so
    # writes would be acknowledged into a file nobody will ever open again (SPEC §4.5).
    opened: list[tuple[int, int]] = []

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below), so pysqlite must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        _use_wal(cursor, busy_timeout)
        # FULL: a commit is on disk before we acknowledge it (SPEC §4.5).
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()
        if path is not None and not opened:
            opened.append(_file_identity(path) or (0, 0))

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("ledger_write", False)
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        # On the driver's cursor: SQLAlchemy's execute cost 10x the statement itself.
        with driver_cursor(connection, begin, ()) as cursor:
            cursor.execute(begin)
        # Checked once the transaction holds its lock, so only a removal during the
        # transaction itself can still slip by.
        if path is not None and opened and _file_identity(path) != opened[0]:
            connection.exec_driver_sql("ROLLBACK")
            connection.invalidate()
            raise StoreUnavailable(f"database file {path} was removed or replaced")


def _use_wal(cursor: Any, busy_timeout: float) -> None:
    """Switch to WAL (persistent in the file). SQLite does not wait out its busy timeout
    for this switch, so processes creating a new file together retry it here."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
