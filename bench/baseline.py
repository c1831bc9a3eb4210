"""The yardstick: raw sqlite3 (or psycopg) doing the least the same work can cost.

Appends: one INSERT + COMMIT per event into an events-shaped table, WAL and
synchronous=FULL like the ledger's own connections, in a file on the same disk.
Reads: one SELECT of the same rows the ledger call returns, on the ledger's own file.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS raw_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    originator_id BLOB NOT NULL,
    originator_version INTEGER NOT NULL,
    topic TEXT NOT NULL,
    state BLOB NOT NULL,
    UNIQUE (originator_id, originator_version)
)
"""
PAYLOAD = b'{"type":"transcript.appended","content":"' + b"x" * 300 + b'"}'


def sqlite_connect(path: Path | str) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    return connection


class SqliteBaseline:
    """Raw sqlite3 in its own file beside the ledger's."""

    def __init__(self, directory: Path) -> None:
        self.connection = sqlite_connect(directory / "raw-baseline.db")
        self.connection.execute(EVENTS_DDL)
        self.originator = uuid.uuid4().bytes
        self.version = 0

    def _rows(self, n: int) -> list[tuple[bytes, int, str, bytes]]:
        rows = [(self.originator, self.version + i + 1, "topic", PAYLOAD) for i in range(n)]
        self.version += n
        return rows

    def append_rate(self, n: int) -> float:
        """Events/s, one INSERT + COMMIT per event."""
        insert = "INSERT INTO raw_events (originator_id, originator_version, topic, state) "
        insert += "VALUES (?, ?, ?, ?)"
        rows = self._rows(n)
        c = self.connection
        started = time.perf_counter()
        for row in rows:
            c.execute("BEGIN IMMEDIATE")
            c.execute(insert, row)
            c.execute("COMMIT")
        return n / (time.perf_counter() - started)

    def batch_rate(self, batch: int, batches: int) -> float:
        """Events/s, `batch` INSERTs (executemany) per COMMIT."""
        insert = "INSERT INTO raw_events (originator_id, originator_version, topic, state) "
        insert += "VALUES (?, ?, ?, ?)"
        all_rows = [self._rows(batch) for _ in range(batches)]
        c = self.connection
        started = time.perf_counter()
        for rows in all_rows:
            c.execute("BEGIN IMMEDIATE")
            c.executemany(insert, rows)
            c.execute("COMMIT")
        return batch * batches / (time.perf_counter() - started)

    def close(self) -> None:
        self.connection.close()


class PostgresBaseline:
    """Raw psycopg into an events-shaped table of the same database (dropped afterwards)."""

    def __init__(self, url: str) -> None:
        import psycopg

        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        self.connection = psycopg.connect(dsn, autocommit=True)
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS raw_events (id BIGSERIAL PRIMARY KEY, "
            "originator_id UUID NOT NULL, originator_version INTEGER NOT NULL, "
            "topic TEXT NOT NULL, state BYTEA NOT NULL, "
            "UNIQUE (originator_id, originator_version))"
        )
        self.originator = uuid.uuid4()
        self.version = 0

    def _rows(self, n: int) -> list[tuple[Any, ...]]:
        rows = [(self.originator, self.version + i + 1, "topic", PAYLOAD) for i in range(n)]
        self.version += n
        return rows

    def append_rate(self, n: int) -> float:
        insert = "INSERT INTO raw_events (originator_id, originator_version, topic, state) "
        insert += "VALUES (%s, %s, %s, %s)"
        rows = self._rows(n)
        started = time.perf_counter()
        for row in rows:
            with self.connection.transaction():
                self.connection.execute(insert, row)
        return n / (time.perf_counter() - started)

    def batch_rate(self, batch: int, batches: int) -> float:
        insert = "INSERT INTO raw_events (originator_id, originator_version, topic, state) "
        insert += "VALUES (%s, %s, %s, %s)"
        all_rows = [self._rows(batch) for _ in range(batches)]
        started = time.perf_counter()
        for rows in all_rows:
            with self.connection.transaction(), self.connection.cursor() as cursor:
                cursor.executemany(insert, rows)
        return batch * batches / (time.perf_counter() - started)

    def select_seconds(self, sql: str, params: Sequence[Any]) -> float:
        started = time.perf_counter()
        self.connection.execute(sql.replace("?", "%s"), params).fetchall()
        return time.perf_counter() - started

    def close(self) -> None:
        self.connection.execute("DROP TABLE IF EXISTS raw_events")
        self.connection.close()


def sqlite_select(path: Path | str) -> Callable[[str, Sequence[Any]], float]:
    """Seconds one raw SELECT (fetching every row) takes on the ledger's own file."""
    connection = sqlite3.connect(str(path), check_same_thread=False)

    def timed(sql: str, params: Sequence[Any]) -> float:
        started = time.perf_counter()
        connection.execute(sql, params).fetchall()
        return time.perf_counter() - started

    return timed
