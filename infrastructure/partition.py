"""A large SQLite rebuild's fold, spread over worker processes by key.

A key's rows (its pointer, generations, runs, entries, receipts) depend only on its own
events: the write path refuses a sessionId, runId or eventId another key already uses.
So worker k of W folds only the events whose `originator_id` (the key's aggregate id)
falls in its share, decided in SQL before anything is decoded, with the same Projector
and fold as the serial path, into a temporary SQLite file of its own: the workers never
queue for the store's single writer lock. The parent is worker 0; workers 1..W-1 are
spawned processes, fresh interpreters (never forked: the parent may hold threads and
open connections).

Each file's read-model tables are made with the store's own DDL (its live tables, as
the migrations made them; their secondary indexes are built once the share is folded).
The parent then merges the files into the first (`Parts.merge`, outside the store's
writer lock), folds the events recorded meanwhile into it (`Parts.catch_up`), and the
rebuild's swap (infrastructure/maintenance.py) copies that one file into the emptied
live tables under the writer lock in one transaction, by SQLite's transfer optimisation
(records and index entries copied as stored). There is no copy through the `*_shadow`
tables and nothing to clear after it. A primary-key collision in the merge means two
keys' rows were not independent after all: the caller folds serially instead. A worker
that fails or dies fails the rebuild: nothing is swapped.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    make_url,
)

from domain.errors import StoreUnavailable
from domain.events import LedgerEvent
from infrastructure import jsoncodec
from infrastructure.collector import collector_at_ease
from projections.projector import Projector
from projections.tables import TABLES

if TYPE_CHECKING:
    from infrastructure.ledger import Ledger

Progress = Callable[[int], None]

PARTITION_FROM = 50_000  # log events from which a SQLite rebuild folds in worker processes
# Processes folding at once, the parent included: each holds its own interpreter and
# page of rows (about 80-100 MB), and the swap after them stays serial.
MAX_WORKERS = 2
PAGE = 2000  # events per worker transaction, as the serial fold's pages


class WorkerFailed(StoreUnavailable):
    """A rebuild worker raised or died: the rebuild swapped nothing."""


def default_workers() -> int:
    """Processes a rebuild folds in: the cores this process may use, at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def store_path(ledger: Ledger) -> str | None:
    """The SQLite file of the store, None for PostgreSQL or an in-memory database."""
    database = ledger.database
    if database.dialect != "sqlite":
        return None
    name = make_url(database.url).database or ""
    if name in ("", ":memory:") or "mode=memory" in database.url:
        return None
    return os.path.abspath(name)


class Parts:
    """The workers' files, every key's rows folded up to `position`, one file per share
    until `merge` makes them one."""

    def __init__(self, ledger: Ledger, files: list[Path], position: int) -> None:
        self.ledger = ledger
        self.files = files
        self.position = position

    def merge(self) -> bool:
        """Copy the other files' rows into the first, which then holds every key's rows;
        False if two keys' rows collided (the first file is then useless).

        Done outside the store's writer lock, into a file without journal or fsync: the
        swap then copies one file into the emptied live tables, all of it by SQLite's
        transfer optimisation (records and index entries as stored), which a copy into
        tables that already hold rows cannot use (it must check uniqueness row by row)."""
        first, *others = self.files
        try:
            if not self._merge(first, others):
                return False
        except sqlite3.Error as e:  # a file gone or unreadable: no rebuild to swap
            raise StoreUnavailable(f"rebuild files unavailable: {e}") from e
        self.files = [first]
        return True

    @staticmethod
    def _merge(first: Path, others: list[Path]) -> bool:
        connection = sqlite3.connect(first, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode = OFF")
            connection.execute("PRAGMA synchronous = OFF")
            for k, file in enumerate(others):
                connection.execute(f'ATTACH DATABASE ? AS "part{k}"', (str(file),))
            connection.execute("BEGIN")
            for k in range(len(others)):
                for table in TABLES.projected:
                    name = table.name
                    try:
                        connection.execute(
                            f'INSERT INTO main."{name}" SELECT * FROM "part{k}"."{name}"'
                        )
                    except sqlite3.IntegrityError:
                        return False  # no journal to roll back: the file is thrown away
            connection.execute("COMMIT")
            return True
        finally:
            connection.close()

    def catch_up(self, target: int, on_progress: Progress | None) -> None:
        """Fold each share's events after `position` up to `target` into its file (in this
        process: what arrived during the workers' fold is a small part of the log)."""
        for share, file in enumerate(self.files):
            fold_share(
                self.ledger, file, share, len(self.files), self.position, target, on_progress
            )
        self.position = target

    @property
    def attachments(self) -> dict[str, str]:
        """Schema name -> file, to attach the (merged) file to the swap's connection."""
        (file,) = self.files
        return {"parts": str(file)}

    @staticmethod
    def copies() -> list[str]:
        """`INSERT … SELECT *` of the merged file's rows into each (emptied) live table:
        records as stored. Both sides have the same columns in the same order, as the
        files' tables were made with the store's own DDL."""
        return [
            f'INSERT INTO main."{table.name}" SELECT * FROM "parts"."{table.name}"'
            for table in TABLES.projected
        ]


@contextmanager
def folded(ledger: Ledger, workers: int, on_progress: Progress | None) -> Iterator[Parts]:
    """The log up to its head folded into one temporary file per share across `workers`
    processes, removed again when the block ends."""
    path = store_path(ledger)
    assert path is not None and workers > 1
    with ledger.database.reading() as connection:
        target = ledger.projector.log_head(connection)
    directory = Path(tempfile.mkdtemp(prefix=_remove_stale(path), dir=os.path.dirname(path)))
    files = [directory / f"part-{k}.db" for k in range(workers)]
    children: list[_Child] = []
    try:
        for k in range(1, workers):
            children.append(_Child.start(ledger, files[k], k, workers, target))

        def progress(count: int) -> None:
            if on_progress is not None:
                on_progress(count)
            # The children's pages so far, without waiting for more.
            _receive(children, on_progress, block=False)

        fold_share(ledger, files[0], 0, workers, 0, target, progress)
        while any(not child.done for child in children):
            _receive(children, on_progress, block=True)
        for child in children:
            child.close()
        children.clear()
        yield Parts(ledger, files, target)
    finally:
        for child in children:
            child.close()
        shutil.rmtree(directory, ignore_errors=True)


def _remove_stale(path: str) -> str:
    """The prefix of this store's rebuild directories, with those a rebuild left behind
    removed (its process was killed before its `finally`). Named after the store, so a
    rebuild never touches another store's beside it; one that is still running for
    this store loses its files to this rebuild and fails (StoreUnavailable), nothing
    swapped."""
    prefix = f".{os.path.basename(path)}.rebuild-"
    for stale in Path(os.path.dirname(path)).glob(f"{glob.escape(prefix)}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return prefix


def fold_share(
    ledger: Ledger,
    file: Path,
    share: int,
    workers: int,
    after: int,
    target: int,
    on_progress: Progress | None,
) -> None:
    """Fold the events of share `share` of `workers` after `after` up to `target` into
    `file` (made with the store's DDL if new)."""
    projector = Projector(TABLES)
    schema: tuple[list[str], list[str]] | None = None
    if not file.exists():
        with ledger.database.reading() as connection:
            schema = _schema(connection)
    engine = _part_engine(file)
    try:
        with engine.connect() as part:
            driver = part.connection.driver_connection
            assert driver is not None
            tables, indexes = schema or ([], [])
            for statement in tables:
                driver.execute(statement)

            def write(page: Sequence[tuple[int, LedgerEvent]], previous: int) -> None:
                with part.begin():
                    projector.project(part, projector.new_rowset(part), page, previous)

            def read(position: int) -> Sequence[tuple[int, LedgerEvent]]:
                with ledger.database.reading() as connection:
                    return ledger.event_log.read_share(
                        connection, share, workers, position, target, PAGE
                    )

            fold_pages(read, write, after, PAGE, on_progress)
            with part.begin():
                # Its share is folded up to `target` (the share's own last event may be
                # earlier), so a later catch-up of the file starts there.
                projector.set_position(part, target)
            # Secondary indexes built once over the folded rows, sorted, rather than kept
            # up row by row (the fold reads rows by primary key only); only in the first
            # file, which the others are merged into and the swap copies from.
            if share == 0:
                for statement in indexes:
                    driver.execute(statement)
    finally:
        engine.dispose()


def fold_pages(
    read: Callable[[int], Sequence[tuple[int, LedgerEvent]]],
    write: Callable[[Sequence[tuple[int, LedgerEvent]], int], None],
    after: int,
    page: int,
    on_progress: Progress | None,
    *,
    until: int | None = None,
) -> int:
    """Fold the log after `after` a page at a time: `read` the events after a position
    (at most `page`), `write` them (folded after the previous position), until a short
    page or the position `until`; the position reached. The serial rebuild and verify
    (into the shadow tables) and each worker (into its file) fold this way."""
    position = after
    while True:
        events = read(position)
        if events:
            write(events, position)
            position = events[-1][0]
            if on_progress is not None:
                on_progress(len(events))
        if len(events) < page or (until is not None and position >= until):
            return position


def _schema(connection: Connection) -> tuple[list[str], list[str]]:
    """The DDL of the store's live read-model tables, and of their secondary indexes."""
    names = [table.name for table in (*TABLES.projected, TABLES.tracking)]
    marks = ", ".join("?" * len(names))
    rows = connection.exec_driver_sql(
        f"SELECT type, sql FROM sqlite_schema WHERE tbl_name IN ({marks}) "
        "AND sql IS NOT NULL ORDER BY rowid",
        tuple(names),
    )
    tables: list[str] = []
    indexes: list[str] = []
    for kind, sql in rows:
        (indexes if kind == "index" else tables).append(sql)
    return tables, indexes


def _part_engine(file: Path) -> Engine:
    """A worker's file: the store's JSON codec (rows are copied as they are stored), no
    journal or fsync (a failed rebuild throws the file away)."""
    engine = create_engine(
        f"sqlite:///{file}",
        json_serializer=jsoncodec.dumps_sqlite,
        json_deserializer=jsoncodec.loads,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA journal_mode = OFF")
        dbapi_connection.execute("PRAGMA synchronous = OFF")

    return engine


class _Child:
    """A worker process (a fresh interpreter: `python -m infrastructure.partition`) and
    the pipe it reports on, a line per message: `page N`, `done` or `error TEXT`.

    Not multiprocessing's spawn: it runs the parent's `__main__` module again in the
    child, which breaks (or runs twice) any script that calls rebuild without an
    `if __name__ == "__main__"` guard."""

    def __init__(self, share: int, process: subprocess.Popen[bytes], reader: int) -> None:
        self.share = share
        self.process = process
        self.reader = reader
        self.pending = b""
        self.done = False

    @classmethod
    def start(cls, ledger: Ledger, file: Path, share: int, workers: int, target: int) -> _Child:
        reader, writer = os.pipe()
        # The parent's code, not whatever else the interpreter would find first.
        root = str(Path(__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        database = ledger.database
        arguments = (database.url, database.busy_timeout, file, share, workers, target, writer)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "infrastructure.partition", *map(str, arguments)],
                pass_fds=(writer,),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            os.close(reader)
            raise
        finally:
            os.close(writer)  # the child's end: EOF here once the child is gone
        return cls(share, process, reader)

    def read(self, on_progress: Progress | None) -> None:
        """What the worker wrote since: pages folded, its end, or its error."""
        data = os.read(self.reader, 65536)
        if not data:
            code = self.process.wait()
            raise WorkerFailed(
                f"rebuild worker {self.share} exited (code {code}) before it finished; "
                "nothing was swapped"
            )
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            kind, _, value = line.decode().partition(" ")
            if kind == "page":
                if on_progress is not None:
                    on_progress(int(value))
            elif kind == "done":
                self.done = True
            else:
                raise WorkerFailed(
                    f"rebuild worker {self.share} failed: {value}; nothing was swapped"
                )

    def close(self) -> None:
        if self.process.poll() is None and not self.done:
            self.process.kill()
        self.process.wait()
        os.close(self.reader)


def _receive(children: list[_Child], on_progress: Progress | None, *, block: bool) -> None:
    """Read what the unfinished workers reported (block: wait until one of them did)."""
    waiting = {child.reader: child for child in children if not child.done}
    if not waiting:
        return
    # poll(2), not select(2): a serving process may hold file descriptors beyond 1024.
    for reader in wait(list(waiting), None if block else 0):
        waiting[reader].read(on_progress)  # type: ignore[index]


def _work(arguments: list[str]) -> None:
    """A worker process: fold its share, reporting each page, then that it is done or its error."""
    url, busy_timeout, file, share, workers, target, fd = arguments
    with os.fdopen(int(fd), "w", buffering=1) as report:
        try:
            from infrastructure.database import Database
            from infrastructure.ledger import Ledger

            ledger = Ledger(Database(url, busy_timeout=float(busy_timeout)))
            try:
                with collector_at_ease():
                    fold_share(
                        ledger,
                        Path(file),
                        int(share),
                        int(workers),
                        0,
                        int(target),
                        lambda n: print(f"page {n}", file=report),
                    )
            finally:
                ledger.close()
            print("done", file=report)
        except BaseException as e:
            text = " ".join(f"{type(e).__name__}: {e}".split())  # one line
            print(f"error {text}", file=report)
            raise SystemExit(1) from None


if __name__ == "__main__":
    _work(sys.argv[1:])
