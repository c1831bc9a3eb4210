"""a database that is locked, full or gone is a clear StoreUnavailable.

Nothing is half-written, and the client may retry with the same eventIds: once the
fault is gone they are recorded exactly once.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import event

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.domain.values import MAX_ENTRY_BYTES
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.projections.tables import EVENTS_TABLE
from tests.conftest import PostgresServer, free_port, pg_bindir
from tests.helpers import assert_replay_equals_live

KEY = "agent:main:telegram:direct:4242"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
BUSY = 0.3  # seconds a write waits on a locked store


def appends(session_id: str, prefix: str, count: int, size: int = 10) -> list[dict[str, Any]]:
    """A chain of `count` transcript entries, each `size` bytes of content or so."""
    facts = []
    for n in range(count):
        facts.append(
            {
                "type": "transcript.appended",
                "eventId": f"{prefix}-e{n}",
                "sessionKey": KEY,
                "sessionId": session_id,
                "occurredAt": "2026-11-21T10:00:01Z",
                "writer": "runner",
                "entry": {
                    "id": f"{prefix}-m{n}",
                    "parentId": f"{prefix}-m{n - 1}" if n else None,
                    "role": "assistant",
                    "content": f"{n:04d}" + os.urandom(size // 2).hex(),
                    "timestamp": "2026-11-21T10:00:01Z",
                },
            }
        )
    return facts


def snapshot(ledger: Ledger) -> tuple[Any, ...]:
    return ledger.log(), ledger.position(), ledger.session(KEY)


def assert_recorded_once(ledger: Ledger, batch: list[dict[str, Any]]) -> None:
    """The retried batch is in, once; a further retry answers as a duplicate."""
    results = ledger.record(batch)
    assert [r.outcome for r in results] == ["applied"] * len(batch)
    again = ledger.record(batch)
    assert [(r.outcome, r.position) for r in again] == [(r.outcome, r.position) for r in results]
    assert all(r.reason and r.reason.startswith("duplicate") for r in again)


def assert_unavailable(call: Any, within: float) -> StoreUnavailable:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        call()
    assert time.monotonic() - started < within, "StoreUnavailable must come promptly"
    return raised.value


# -- SQLite: locked ----------------------------------------------------------------------


@pytest.fixture
def locked_sqlite(sqlite_url: str) -> Iterator[tuple[Ledger, sqlite3.Connection]]:
    ledger = Ledger.open(sqlite_url, busy_timeout=BUSY)
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        yield ledger, locker
    finally:
        locker.close()
        ledger.close()


def test_a_locked_sqlite_store_is_unavailable_and_the_same_events_succeed_later(
    sqlite_url: str, locked_sqlite: tuple[Ledger, sqlite3.Connection]
) -> None:
    ledger, locker = locked_sqlite
    sid = ledger.resolve(KEY, at=T0).session.session_id
    ledger.record(appends(sid, "before", 2))
    before = snapshot(ledger)
    batch = appends(sid, "locked", 3)

    locker.execute("BEGIN EXCLUSIVE")  # another connection holds the write lock
    error = assert_unavailable(lambda: ledger.record(batch), within=5 * BUSY + 5)
    assert "locked" in str(error)
    assert_unavailable(lambda: ledger.reset(KEY), within=5 * BUSY + 5)
    assert_unavailable(lambda: ledger.resolve("agent:main:main", at=T0), within=5 * BUSY + 5)
    # A process starting now cannot catch up either, and says so.
    assert_unavailable(lambda: Ledger.open(sqlite_url, busy_timeout=BUSY), within=5 * BUSY + 5)
    assert snapshot(ledger) == before, "a failed write left something behind"
    locker.execute("ROLLBACK")

    assert_recorded_once(ledger, batch)
    assert [e.entry_id for e in ledger.transcript(KEY)][-3:] == [f"locked-m{n}" for n in range(3)]
    ledger.reset(KEY)
    assert_replay_equals_live(ledger)


def test_a_lock_held_by_another_process_is_waited_for_within_the_busy_timeout(
    sqlite_url: str,
) -> None:
    """A writer briefly holding the lock is queued behind, not reported as a fault."""
    with Ledger.open(sqlite_url, busy_timeout=10) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        holder = subprocess.Popen(
            [
                "python3",
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
                "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True);"
                "sys.stdin.readline(); c.execute('COMMIT')",
                sqlite_url.removeprefix("sqlite:///"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
            assert holder.stdin is not None
            # Release the lock from a timer while record() is waiting for it.
            release = threading.Timer(0.5, lambda: holder.communicate(b"\n"))
            release.start()
            results = ledger.record(appends(sid, "queued", 2))
            release.join()
        finally:
            holder.kill()
            holder.wait()
        assert [r.outcome for r in results] == ["applied", "applied"]
        assert_replay_equals_live(ledger)


def test_writers_poll_for_the_lock_and_readers_keep_the_busy_timeout(sqlite_url: str) -> None:
    """A write asks for the lock itself (busy timeout 0 on its connection, polled from
    Python: database._begin_immediate); the same pooled connection reading afterwards
    waits in SQLite's busy handler for the store's whole busy timeout again."""
    with Ledger.open(sqlite_url, busy_timeout=BUSY) as ledger:
        database = ledger.store.database

        def busy_ms(connection: Any) -> Any:
            return connection.exec_driver_sql("PRAGMA busy_timeout").scalar()

        def write(connection: Any) -> Any:
            assert busy_ms(connection) == 0
            return connection.connection.dbapi_connection

        for _ in range(2):
            writer = database.write(write)
            with database.reading() as connection:
                assert connection.connection.dbapi_connection is writer  # pooled: the same
                assert busy_ms(connection) == int(BUSY * 1000)


# -- SQLite: full ------------------------------------------------------------------------


def test_a_full_sqlite_store_is_unavailable_and_leaves_no_trace(sqlite_url: str) -> None:
    """SQLITE_FULL in the middle of a batch: nothing of it is kept, the cache is not stale."""
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        ledger.record(appends(sid, "before", 3))
        before = snapshot(ledger)
        with ledger.store.database.reading() as connection:
            pages = connection.exec_driver_sql("PRAGMA page_count").scalar()

        limit = {"pages": int(pages or 0) + 8}  # room for a little, not for the batch

        def cap(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

        engine = ledger.store.database.engine
        event.listen(engine, "connect", cap)
        engine.dispose()  # new connections get the cap
        big = appends(sid, "full", 8, size=MAX_ENTRY_BYTES // 2)
        # The aggregate takes the batch in memory before the database refuses it.
        error = assert_unavailable(lambda: ledger.record(big), within=10)
        assert "full" in str(error)
        assert snapshot(ledger) == before

        event.remove(engine, "connect", cap)
        engine.dispose()
        assert_recorded_once(ledger, big)
        entries = ledger.transcript(KEY)
        assert [e.entry_id for e in entries] == [f"before-m{n}" for n in range(3)] + [
            f"full-m{n}" for n in range(8)
        ]
        assert [e.seq for e in entries] == list(range(1, 12))
        assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
        assert_replay_equals_live(ledger)


# -- SQLite: gone -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["directory removed", "file replaced"])
def test_a_removed_sqlite_file_is_unavailable_not_written_into_the_void(
    tmp_path: Path, how: str
) -> None:
    """Pooled connections keep an unlinked file open; writing there would lose the events."""
    path = tmp_path / "db" / "ledger.db"
    with Ledger.open(str(path), busy_timeout=BUSY) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        ledger.record(appends(sid, "before", 2))
        if how == "directory removed":
            shutil.rmtree(path.parent)
        else:
            shutil.copy(path, tmp_path / "other.db")
            os.replace(tmp_path / "other.db", path)
        batch = appends(sid, "gone", 2)
        assert_unavailable(lambda: ledger.record(batch), within=10)
        assert_unavailable(lambda: ledger.session(KEY), within=10)
        assert_unavailable(lambda: ledger.record(batch), within=10)  # and stays so
    if how == "file replaced":
        # The file now in place never saw the batch; it takes it as new.
        with Ledger.open(str(path)) as ledger:
            assert_recorded_once(ledger, batch)
            assert_replay_equals_live(ledger)


# -- PostgreSQL: locked, unreachable, gone --------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("busy", [BUSY, 0.0])  # 0: do not wait (PostgreSQL's 0 is "forever")
def test_a_locked_postgres_store_is_unavailable_and_the_same_events_succeed_later(
    postgres_url: str, busy: float
) -> None:
    with Ledger.open(postgres_url, busy_timeout=busy) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        before = snapshot(ledger)
        batch = appends(sid, "locked", 3)
        dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as locker:
            locker.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")
            # One busy timeout, not one per retry: a lock timeout is not a conflict to retry.
            error = assert_unavailable(lambda: ledger.record(batch), within=2 * busy + 0.5)
            assert "locked" in str(error)
            assert snapshot(ledger) == before  # readers are not blocked by the lock
            locker.rollback()
        assert_recorded_once(ledger, batch)
        assert_replay_equals_live(ledger)


def test_no_free_connection_within_the_busy_timeout_is_unavailable(database_url: str) -> None:
    """A process whose connection pool is exhausted answers StoreUnavailable, not a crash."""
    with Ledger.open(database_url, busy_timeout=BUSY) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        before = snapshot(ledger)
        engine = ledger.store.database.engine
        held = []
        try:
            while True:  # every connection the pool may open, held
                try:
                    held.append(engine.connect())
                except sqlalchemy.exc.TimeoutError:
                    break  # the pool waited its timeout (BUSY) for one in vain
            assert_unavailable(lambda: ledger.record(appends(sid, "starved", 1)), within=BUSY + 5)
        finally:
            for connection in held:
                connection.close()
        assert snapshot(ledger) == before
        assert_recorded_once(ledger, appends(sid, "starved", 1))


@pytest.mark.postgres
def test_an_unreachable_postgres_server_is_unavailable() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/sessionledger"
    error = assert_unavailable(lambda: Ledger.open(url), within=10)
    assert "unavailable" in str(error)


@pytest.fixture
def private_postgres() -> Iterator[tuple[PostgresServer, Any]]:
    """A server of our own to stop and start (the shared one stays up for other tests)."""
    bindir = pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="sessionledger-pg-private-"))
    prefix: list[str] = []
    user = os.environ.get("USER") or "postgres"
    if os.geteuid() == 0:
        user = "postgres"
        shutil.chown(base, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    else:
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
    data = base / "data"
    port = free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base}"

    def pg_ctl(*args: str) -> None:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), *args],
            check=True,
            capture_output=True,
        )

    def control(action: str) -> None:
        if action == "start":
            pg_ctl("-o", options, "-w", "-t", "60", "start")
        else:
            pg_ctl("-m", "immediate", "-w", "stop")  # as abrupt as a crash

    control("start")
    try:
        yield PostgresServer("127.0.0.1", port, user), control
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgres
def test_a_postgres_server_that_goes_away_is_unavailable_until_it_returns(
    private_postgres: tuple[PostgresServer, Any],
) -> None:
    server, control = private_postgres
    url = server.create_database()
    with Ledger.open(url, busy_timeout=2) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        ledger.record(appends(sid, "before", 2))
        batch = appends(sid, "gone", 3)

        control("stop")
        assert_unavailable(lambda: ledger.record(batch), within=15)
        assert_unavailable(lambda: ledger.session(KEY), within=15)
        assert_unavailable(lambda: ledger.reset(KEY), within=15)
        control("start")

        # The pool's dead connections are replaced; the retried batch goes in once.
        assert_recorded_once(ledger, batch)
        assert [e.entry_id for e in ledger.transcript(KEY)] == [
            "before-m0",
            "before-m1",
            "gone-m0",
            "gone-m1",
            "gone-m2",
        ]
        assert_replay_equals_live(ledger)
