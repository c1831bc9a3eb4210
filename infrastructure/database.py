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
from typing import Any, TypeVar, cast

import sqlalchemy.exc
from eventsourcing.persistence import IntegrityError as LibraryIntegrityError
from eventsourcing.persistence import PersistenceError
from sqlalchemy import Connection, Engine, RootTransaction, create_engine, event, make_url
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.infrastructure import jsoncodec
from sessionledger.infrastructure.checkpointer import BACKSTOP_PAGES, Checkpointer
from sessionledger.infrastructure.settings import BUSY_TIMEOUT_SECONDS
from sessionledger.projections.tables import EVENTS_TABLE

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
        # The SQLite file, None for PostgreSQL or an in-memory database.
        self.path = path = _sqlite_file_path(url)
        self.engine = _create_engine(url, busy_timeout, path)
        self.dialect = self.engine.dialect.name
        # A SQLite file's checkpoints run after commits, not in them (checkpointer.py).
        self.checkpointer = Checkpointer(path) if path is not None else None
        # This process's writers queue on a lock; the one waiting for another process
        # asks SQLite for the write lock every millisecond (_begin_immediate).
        self._process_write_lock = threading.Lock() if self.dialect == "sqlite" else None
        # This thread's write transaction's connection.
        self._local = threading.local()
        # The ORM session of this thread's write transaction, joined to its connection and
        # made only when library code asks for one: what eventsourcing-sqlalchemy's
        # scoped-session hook takes (a transaction managed outside the application).
        # (Its factory is "usually, but not necessarily" a sessionmaker, says SQLAlchemy.)
        self.sessions: scoped_session[Session] = scoped_session(
            cast("sessionmaker[Session]", self._joined_session)
        )
        self._lock_sql: tuple[str, ...] = ()
        if self.dialect == "postgresql":
            # At least 1 ms: PostgreSQL reads a lock_timeout of 0 as "wait forever".
            wait_ms = max(1, int(busy_timeout * 1000))
            self._lock_sql = (
                f"SET LOCAL lock_timeout = '{wait_ms}ms'",
                f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE",
            )

    def _begin(self, connection: Connection | None = None) -> Connection:
        """The writer lock, a connection (a new one, or the caller's) and its transaction
        (SQLite `BEGIN IMMEDIATE`; PostgreSQL `LOCK TABLE`). No ORM session: its
        begin/commit bookkeeping cost more than the rest of a single-event command's
        Python (`session` makes one for whatever library code wants one)."""
        lock = self._process_write_lock
        if lock is not None and not lock.acquire(timeout=self.busy_timeout):
            raise StoreUnavailable("timed out waiting for this process's other writers")
        try:
            own = connection is None
            if connection is None:
                connection = self.engine.connect()
            try:
                _begin_immediately(connection)
                for sql in self._lock_sql:
                    connection.exec_driver_sql(sql)
            except BaseException:
                if own:
                    connection.close()  # rolls back whatever began
                elif connection.in_transaction():
                    connection.rollback()
                raise
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        self._local.connection = connection
        return connection

    def _end(self, connection: Connection, *, commit: bool, close: bool = True) -> None:
        """Commit (or roll back), then give back the connection (unless the caller keeps
        it: `close=False`) and the writer lock."""
        self._local.connection = None
        try:
            if self.sessions.registry.has():
                self.sessions.remove()  # joined our transaction: closing it leaves it to us
            if commit:
                connection.commit()
                if self.checkpointer is not None:
                    self.checkpointer.committed()
            elif not close:
                connection.rollback()  # closing would have rolled it back
        finally:
            try:
                if close:
                    connection.close()
            finally:
                if self._process_write_lock is not None:
                    self._process_write_lock.release()

    @property
    def current(self) -> Connection | None:
        """The connection of this thread's write transaction, if it is in one."""
        return getattr(self._local, "connection", None)

    def _joined_session(self) -> Session:
        """The session `sessions` makes for this thread: in a write transaction, joined to
        its connection (its commit commits nothing; closing it, which the transaction's
        end does, leaves the transaction to us); outside one, on the engine, for whoever
        asked (the library reads the dialect from it) to remove again."""
        connection = self.current
        return Session(
            bind=self.engine if connection is None else connection,
            autoflush=False,
            expire_on_commit=False,
        )

    def write_once(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one write transaction on a Core connection, holding the
        database's writer lock from its start; commit if it returns, roll back if it
        raises. Database errors are raised as they are, not retried: for the library's
        recorders called outside a command, whose callers expect the library's errors.
        Commands use `write`."""
        connection = self._begin()
        try:
            result = work(connection)
        except BaseException:
            self._end(connection, commit=False)
            raise
        self._end(connection, commit=True)
        return result

    def write(
        self,
        work: Callable[[Connection], T],
        *,
        on_failure: Callable[[], None] | None = None,
        attempts: int = 5,
    ) -> T:
        """Run `work` in one write transaction (`write_once`). Transient conflicts
        (deadlock, serialisation, a duplicate aggregate version) run `work` again, up to
        `attempts` times; database faults raise StoreUnavailable. `on_failure` runs after
        each failed attempt."""
        for attempt in range(1, attempts + 1):
            try:
                try:
                    return self.write_once(work)
                except _DATABASE_ERRORS as error:
                    fault = _fault(error, retry=True)
                    if fault is None:
                        raise
                    raise fault from error
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

    def write_attached(self, work: Callable[[Connection], T], files: dict[str, str]) -> T:
        """Run `work` in one SQLite write transaction on a connection with other database
        files attached (schema name -> path; a rebuild's worker files), detached again
        before the connection goes back to the pool. Not retried: a conflict here is a
        fault of its own. ATTACH is refused inside a transaction, hence not `write`."""
        if self._process_write_lock is None:
            raise ValueError("only SQLite attaches database files")
        with translate_faults():
            connection = self.engine.connect()
            try:
                driver = connection.connection.driver_connection
                assert driver is not None
                attached: list[str] = []
                try:
                    for name, path in files.items():
                        driver.execute(f'ATTACH DATABASE ? AS "{name}"', (path,))
                        attached.append(name)
                    # The transaction writes every read-model page: its commit's own
                    # checkpoint would copy them all into the database file while this
                    # process's writers still wait. Checkpointed after the locks instead,
                    # passively, so writers go on meanwhile.
                    ((every,),) = driver.execute("PRAGMA wal_autocheckpoint").fetchall()
                    driver.execute("PRAGMA wal_autocheckpoint = 0")
                    try:
                        result = self._write_on(connection, work)
                    finally:
                        driver.execute(f"PRAGMA wal_autocheckpoint = {int(every)}")
                    driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    return result
                finally:
                    try:
                        for name in attached:
                            driver.execute(f'DETACH DATABASE "{name}"')
                    except BaseException:
                        connection.invalidate()  # never pooled with files attached
                        raise
            finally:
                connection.close()

    def _write_on(self, connection: Connection, work: Callable[[Connection], T]) -> T:
        """`work` in a write transaction on `connection` (kept open: the caller detaches
        files from it first), holding the writer locks."""
        self._begin(connection)
        try:
            result = work(connection)
        except BaseException:
            self._end(connection, commit=False, close=False)
            raise
        self._end(connection, commit=True, close=False)
        return result

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only snapshot (SQLite deferred transaction, PostgreSQL read committed)."""
        with translate_faults(), self.engine.connect() as connection, connection.begin():
            yield connection

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.engine.dispose()


class _Retry(Exception):
    pass


@contextmanager
def translate_faults(*, retry: bool = False) -> Iterator[None]:
    """Database faults become StoreUnavailable (or, inside `write`, a retry); bugs stay bugs."""
    try:
        yield
    except _DATABASE_ERRORS as error:
        fault = _fault(error, retry=retry)
        if fault is None:
            raise
        raise fault from error


# What `_fault` looks at; anything else passes through as it is.
_DATABASE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, PersistenceError)


def _fault(e: Exception, *, retry: bool) -> Exception | None:
    """What a database error becomes: StoreUnavailable, or (retry) _Retry; None for a bug."""
    if isinstance(e, (sqlalchemy.exc.IntegrityError, LibraryIntegrityError)):
        # Writers are serialised, so a conflict here is unexpected: decide again, but say so.
        log.warning("write conflicted (%s); deciding again", _first_line(e))
        if retry:
            return _Retry()
        return StoreUnavailable(f"conflicting write: {_first_line(e)}")
    if isinstance(e, sqlalchemy.exc.TimeoutError):
        # Every pooled connection stayed busy for the whole busy timeout.
        return StoreUnavailable(f"database busy: {_first_line(e)}")
    if isinstance(e, sqlalchemy.exc.DBAPIError):
        code = getattr(getattr(e, "orig", None), "sqlstate", None)
        if code in _RETRYABLE_PG_CODES and retry:
            return _Retry()
        if code in _LOCKED_PG_CODES:
            return StoreUnavailable(f"database locked: {_first_line(e)}")
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
            e.connection_invalidated
        ):
            return StoreUnavailable(f"database unavailable: {_first_line(e)}")
        return None
    if isinstance(e, PersistenceError):
        return StoreUnavailable(f"database unavailable: {_first_line(e)}")
    return None


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _register_sqlite_adapters() -> None:
    """pysqlite binds only exact int, float, str and bytearray values directly; any other
    value (None, bytes, memoryview, bool) goes through its adaptation protocol, which looks up
    `__adapt__` and `__conform__` and pays for an AttributeError each time: about 30
    values of a single-event command, 2% of its instructions. An adapter registered
    for the type is found first, by one dict lookup, and binds the same value (NULL,
    the same blob, 0/1). Process-wide, like every sqlite3 adapter."""
    none: dict[None, None] = {}  # none.get(None) is None, in C
    sqlite3.register_adapter(type(None), cast(Callable[[None], None], none.get))
    sqlite3.register_adapter(bytes, bytes)  # an exact bytes object comes back as itself
    # SQLAlchemy wraps binary values (the events' ids and payloads) in sqlite3.Binary.
    sqlite3.register_adapter(memoryview, memoryview)
    sqlite3.register_adapter(bool, int)


def _sqlite_file_path(url: str) -> str | None:
    """The absolute path of the SQLite file at `url`; None for anything else (an
    in-memory database, PostgreSQL)."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database or ""
    if database in ("", ":memory:") or "mode=memory" in url:
        return None
    return os.path.abspath(database)


def _create_engine(url: str, busy_timeout: float, path: str | None) -> Engine:
    """`path`: the SQLite file's (`_sqlite_file_path`), None for an in-memory one."""
    if url.startswith("sqlite"):
        _register_sqlite_adapters()
        in_memory = path is None
        engine = create_engine(
            url,
            json_serializer=jsoncodec.dumps_sqlite,
            json_deserializer=jsoncodec.loads,
            connect_args={"timeout": busy_timeout, "check_same_thread": False},
            # A file's pool queues for connections; an in-memory one has a single one.
            **({} if in_memory else {"pool_timeout": busy_timeout}),
        )
        _configure_sqlite(engine, busy_timeout, path)
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


# Set on this thread while a write transaction begins: SQLite's BEGIN is then
# BEGIN IMMEDIATE, which takes the write lock at once.
_WRITE_BEGIN = threading.local()


def _begin_immediately(connection: Connection) -> RootTransaction:
    _WRITE_BEGIN.immediate = True
    try:
        return connection.begin()
    finally:
        _WRITE_BEGIN.immediate = False


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()` that takes SQLite's write lock at BEGIN (on engines made here)."""
    with engine.connect() as connection, _begin_immediately(connection):
        yield connection


def _configure_sqlite(engine: Engine, busy_timeout: float, path: str | None) -> None:
    # The file this engine's first connection opened, as (device, inode). An open SQLite
    # connection keeps reading and writing its file after it is unlinked or replaced, so
    # writes would be acknowledged into a file nobody will ever open again (invariant 5).
    opened: list[tuple[int, int]] = []

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below), so pysqlite must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        _use_wal(cursor, busy_timeout)
        # FULL: a commit is on disk before we acknowledge it (docs/invariants.md, rule 5).
        cursor.execute("PRAGMA synchronous = FULL")
        if path is not None:  # a file's checkpoints are the Checkpointer's, up to this
            cursor.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
        cursor.close()
        if path is not None and not opened:
            opened.append(_file_identity(path) or (0, 0))

    dialect = engine.dialect
    busy_pragma = f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}"

    def do_begin(dbapi_connection: Any) -> None:
        """BEGIN, issued by us (pysqlite must not: see above). The dialect's hook rather
        than a "begin" event listener: with any Connection event listened for, every
        Connection joins the engine's event dispatch and dispatches begin and commit,
        about 20 µs per transaction. Driver errors raised here SQLAlchemy raises as its
        own, like any statement's."""
        raw = dbapi_connection.dbapi_connection
        info = dbapi_connection.info
        if _WRITE_BEGIN.__dict__.get("immediate"):
            _begin_immediate(raw, info, busy_timeout)
        else:
            if info.get(_POLLING):
                raw.execute(busy_pragma)  # a reader waits in SQLite's busy handler
                info[_POLLING] = False
            raw.execute("BEGIN")
        # Checked once the transaction holds its lock, so only a removal during the
        # transaction itself can still slip by.
        if path is not None and opened and _file_identity(path) != opened[0]:
            raw.execute("ROLLBACK")
            dbapi_connection.invalidate()
            raise StoreUnavailable(f"database file {path} was removed or replaced")

    dialect.do_begin = do_begin  # type: ignore[method-assign]


# The pooled connection's busy timeout is 0 (set for BEGIN IMMEDIATE's polling), not the
# store's: a key of its `info`, which lives as long as the driver connection.
_POLLING = "sessionledger_polling"
# How often a writer asks for SQLite's write lock while another process holds it.
POLL_SECONDS = 0.001


def _begin_immediate(raw: sqlite3.Connection, info: dict[Any, Any], busy_timeout: float) -> None:
    """BEGIN IMMEDIATE, asked for every POLL_SECONDS until the busy timeout has passed.

    SQLite's own busy handler sleeps 1, 2, 5, ... up to 100 ms between tries. A process
    whose writers hand the lock on to each other at once leaves it free only for
    microseconds between transactions, so a writer in another process that sleeps
    100 ms at a time waited seconds for one of those moments (a reset from a second
    process, 0.01-1.75 s). Asking every millisecond finds one within tens of them.
    Within this process writers already queue on `Database`'s lock, so at most one
    thread a process polls. The connection keeps a busy timeout of 0 while it writes
    (nothing else in a write transaction waits for a lock) and gets the store's back
    before a read."""
    if not info.get(_POLLING):
        raw.execute("PRAGMA busy_timeout = 0")
        info[_POLLING] = True
    deadline = None
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # extended codes too
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + busy_timeout
            elif now >= deadline:
                raise
            time.sleep(POLL_SECONDS)


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
