"""Checkpoints of a SQLite file run on the Checkpointer's thread after commits, not
inside them; the writers keep a backstop; closing the store stops the thread."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sessionledger.infrastructure.checkpointer import BACKSTOP_PAGES, Checkpointer
from sessionledger.infrastructure.database import Database
from sessionledger.infrastructure.ledger import Ledger

WAIT = 30.0  # seconds: a bound on a condition, never a pause


def test_commits_are_checkpointed_by_the_thread(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        checkpointer = ledger.store.database.checkpointer
        assert checkpointer is not None
        ledger.resolve("agent:main:main", at=datetime.now(UTC))
        assert checkpointer.running
        # The writers would not checkpoint below the backstop, so only the thread has
        # copied the WAL's frames into the database file.
        assert checkpointer.wait_for(frames_in_file=1, timeout=WAIT)
        last = checkpointer.last
        assert last is not None and last.checkpointed_frames == last.log_frames
        with ledger.store.database.engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            assert driver.execute("PRAGMA wal_autocheckpoint").fetchone() == (BACKSTOP_PAGES,)
    assert not checkpointer.running


def test_the_thread_starts_with_the_first_commit(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'lazy.db'}")
    checkpointer = database.checkpointer
    assert checkpointer is not None
    with database.reading() as connection:
        connection.exec_driver_sql("SELECT 1")
    assert not checkpointer.running
    database.write(lambda connection: connection.exec_driver_sql("CREATE TABLE t (x)"))
    assert checkpointer.running
    database.close()
    assert not checkpointer.running


def test_a_removed_file_is_never_made_anew(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    sqlite3.connect(path).close()
    path.unlink()
    checkpointer = Checkpointer(str(path))
    checkpointer.committed()
    checkpointer.close()  # the thread ended, having failed to open the file
    assert not path.exists() and checkpointer.last is None


def test_an_in_memory_database_has_none() -> None:
    database = Database("sqlite://")
    assert database.checkpointer is None
    database.close()


@pytest.mark.postgres
def test_postgres_has_none(postgres_url: str) -> None:
    database = Database(postgres_url)
    assert database.checkpointer is None
    database.close()
