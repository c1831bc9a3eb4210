"""`Database.write_attached` (a partitioned rebuild's swap): the files are attached for
the one transaction only, and the connection goes back to the pool as it came: no
file attached, its automatic checkpoints on again, whether the work commits or fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Connection

from sessionledger.infrastructure.checkpointer import BACKSTOP_PAGES
from sessionledger.infrastructure.database import Database


def attached(connection: Connection) -> list[str]:
    return [row[1] for row in connection.exec_driver_sql("PRAGMA database_list")]


def assert_pooled_as_it_came(database: Database) -> None:
    # A fresh Database has made one connection: the next checkout is that one.
    with database.engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        assert [row[1] for row in driver.execute("PRAGMA database_list")] == ["main"]
        assert driver.execute("PRAGMA wal_autocheckpoint").fetchone() == (BACKSTOP_PAGES,)


@pytest.fixture
def database(tmp_path: Path) -> Database:
    other = sqlite3.connect(tmp_path / "part.db")
    other.execute("CREATE TABLE t (x)")
    other.execute("INSERT INTO t VALUES (1), (2)")
    other.commit()
    other.close()
    return Database(f"sqlite:///{tmp_path / 'store.db'}")


def test_files_are_attached_for_the_transaction_only(database: Database, tmp_path: Path) -> None:
    def work(connection: Connection) -> list[str]:
        connection.exec_driver_sql("CREATE TABLE t (x)")
        connection.exec_driver_sql('INSERT INTO main.t SELECT * FROM "part".t')
        return attached(connection)

    assert database.write_attached(work, {"part": str(tmp_path / "part.db")}) == ["main", "part"]
    with database.reading() as connection:
        assert connection.exec_driver_sql("SELECT x FROM t ORDER BY x").all() == [(1,), (2,)]
    assert_pooled_as_it_came(database)
    database.close()


def test_a_failed_transaction_is_rolled_back_and_detached(
    database: Database, tmp_path: Path
) -> None:
    def work(connection: Connection) -> None:
        connection.exec_driver_sql("CREATE TABLE t (x)")
        raise RuntimeError("the swap failed")

    with pytest.raises(RuntimeError, match="the swap failed"):
        database.write_attached(work, {"part": str(tmp_path / "part.db")})
    with database.reading() as connection:
        assert connection.exec_driver_sql("SELECT name FROM sqlite_schema").all() == []
    assert_pooled_as_it_came(database)
    database.close()
