"""The SQL floor of a single-event command: what its own statements cost without Python.

    .venv/bin/python -m bench.floor [COMMANDS]

Records warm single-event appends through the Ledger while sqlite3's trace callback
captures every statement, then replays exactly those statements through raw sqlite3
on a copy of the database from before them, and compares both with the append
scenario's baseline (one INSERT + COMMIT per event) in the same run. It also counts the
WAL pages each commit writes, per b-tree. See docs/performance.md "Results".
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench.baseline import SqliteBaseline
from bench.facts import Chain
from sessionledger.infrastructure.ledger import Ledger

KEYS = 16


def main(commands: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sessionledger-floor-"))
    try:
        path = folder / "ledger.db"
        ledger = Ledger.open(f"sqlite:///{path}")
        now = datetime.now(UTC)
        chains = []
        for i in range(KEYS):
            key = f"agent:a{i % 3}:slack:direct:u{i}"
            session_id = ledger.resolve(key, at=now).session.session_id
            chains.append(Chain(key, session_id, now))
        for i in range(200):  # warm: caches filled, pages allocated
            ledger.record([chains[i % KEYS].append()])
        ledger.close()
        snapshot = _copy(path, folder / "snapshot.db")

        statements: list[str] = []

        def trace(connection: Any, _record: Any) -> None:
            connection.set_trace_callback(statements.append)

        event.listen(Engine, "connect", trace)
        try:
            ledger = Ledger.open(f"sqlite:///{path}")
            statements.clear()
            started = time.perf_counter()
            for i in range(commands):
                ledger.record([chains[i % KEYS].append()])
            ours = (time.perf_counter() - started) / commands
            ledger.close()
        finally:
            event.remove(Engine, "connect", trace)

        replayed = {sync: _replay(snapshot, path, statements, sync) for sync in ("FULL", "OFF")}
        pages = replayed["FULL"][1]
        baseline = SqliteBaseline(folder)
        raw = 1 / baseline.append_rate(commands)  # seconds per event, this run
        baseline.close()
        floor = replayed["FULL"][0] / commands
        print(f"{len(statements) / commands:.1f} statements per command")
        print(f"baseline INSERT + COMMIT: {1 / raw:,.0f}/s")
        print(f"ledger:                   {1 / ours:,.0f} commands/s, {raw / ours:.2f}x baseline")
        print(f"its SQL replayed raw:     {1 / floor:,.0f} commands/s, {raw / floor:.2f}x baseline")
        unsynced = replayed["OFF"][0] / commands
        print(f"  without fsync:          {unsynced * 1e6:,.0f} us a command (inlined values)")
        print(f"its commit's fsync:       {(floor - unsynced) * 1e6:,.0f} us a command")
        print(f"budget at 0.5x baseline:  {2 * raw * 1e6:,.0f} us a command, everything included")
        print(f"WAL pages per commit: {sum(pages.values()) / commands:.1f}")
        for name, count in pages.most_common():
            print(f"  {count / commands:5.2f}  {name}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _copy(source: Path, target: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        origin = Path(f"{source}{suffix}")
        copy = Path(f"{target}{suffix}")
        if origin.exists():
            shutil.copy(origin, copy)
        elif copy.exists():
            copy.unlink()
    return target


def _replay(
    snapshot: Path, path: Path, statements: list[str], synchronous: str
) -> tuple[float, Counter[str]]:
    _copy(snapshot, path)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        # Keep every frame in the WAL so they can be counted afterwards.
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        started = time.perf_counter()
        for statement in statements:
            connection.execute(statement).fetchall()
        elapsed = time.perf_counter() - started
        return elapsed, _wal_pages(connection, Path(f"{path}-wal"))
    finally:
        connection.close()


def _wal_pages(connection: sqlite3.Connection, wal: Path) -> Counter[str]:
    data = wal.read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    try:
        owners = dict(connection.execute("SELECT pageno, name FROM dbstat").fetchall())
    except sqlite3.OperationalError:  # sqlite3 built without dbstat
        owners = {}
    pages: Counter[str] = Counter()
    for offset in range(32, len(data) - 23, 24 + page_size):
        number = struct.unpack(">I", data[offset : offset + 4])[0]
        pages[owners.get(number, "file header" if number == 1 else f"page {number}")] += 1
    return pages


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    os._exit(0)
