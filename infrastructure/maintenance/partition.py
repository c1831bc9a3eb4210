"""A large SQLite rebuild's fold, spread over worker processes by key.

A key's rows (its pointer, generations, runs, entries, receipts) depend only on its own
events: the write path refuses a sessionId, runId or eventId another key already uses.
So worker k of W folds only the events whose `originator_id` (the key's aggregate id)
falls in its share, decided in SQL before anything is decoded, with the same Projector
and fold as the serial path, into a temporary SQLite file of its own: the workers never
queue for the store's single writer lock. The parent is worker 0; workers 1..W-1 are
spawned processes, fresh interpreters (never forked: the parent may hold threads and
open connections).

Each share's read-model tables are made with the store's own DDL (its live tables, as
the migrations made them; their secondary indexes are built once the share is folded)
in two files (`PartFiles`): the transcript entries and receipts in one, the other tables
in the other, attached to one connection so the fold's table names find them. The parent
then merges the shares (`Parts.merge`, outside the store's writer lock) in two threads
at once, one per group of tables: SQLite runs each copy with the GIL released, and no
file is read by one thread while the other writes it (a file without a journal would
refuse that). It folds the events recorded meanwhile into the merged pair
(`Parts.catch_up`), and the rebuild's swap (infrastructure.maintenance.rebuild) copies the
pair into the emptied live tables under the writer lock in one transaction, by SQLite's
transfer optimisation (records and index entries copied as stored). There is no copy
through the `*_shadow` tables and nothing to clear after it. A primary-key collision in
the merge means two keys' rows were not independent after all: the caller folds
serially instead. A worker that fails or dies fails the rebuild: nothing is swapped.
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.domain.events import LedgerEvent
from sessionledger.infrastructure import jsoncodec
from sessionledger.infrastructure.collector import collector_at_ease
from sessionledger.infrastructure.database import Database
from sessionledger.infrastructure.maintenance.shadow import PAGE, fold_pages
from sessionledger.infrastructure.store import Store
from sessionledger.projections.projector import Projector
from sessionledger.projections.tables import TABLES

Progress = Callable[[int], None]

PARTITION_FROM = 50_000  # log events from which a SQLite rebuild folds in worker processes
# Processes folding at once, the parent included: each holds its own interpreter and
# page of rows (about 80-100 MB), and the swap after them stays serial.
MAX_WORKERS = 2
# The tables in a share's second file: merged in one thread while the rest are merged in
# another. Chosen by their merge times at 1,000,000 events (entries 1.65 s and receipts
# 1.15 s; runs 1.65 s, generations 0.51 s and sessions 0.16 s).
SIDE_TABLES = frozenset({TABLES.entries.name, TABLES.receipts.name})
SIDE = "side"  # the second file's schema name on a share's fold connection


class WorkerFailed(StoreUnavailable):
    """A rebuild worker raised or died: the rebuild swapped nothing."""


def default_workers() -> int:
    """Processes a rebuild folds in: the cores this process may use, at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@dataclass(frozen=True)
class PartFiles:
    """One share's two files: `main` holds the tracking row and the read-model tables
    outside SIDE_TABLES, `side` holds SIDE_TABLES."""

    main: Path
    side: Path

    @classmethod
    def of(cls, directory: Path, share: int) -> PartFiles:
        return cls(directory / f"part-{share}.db", directory / f"part-{share}-side.db")

    def file(self, side: bool) -> Path:
        return self.side if side else self.main


def _tables(side: bool) -> list[str]:
    """The read-model tables in a share's side file, or in its main file."""
    return [t.name for t in TABLES.projected if (t.name in SIDE_TABLES) == side]


def kept_shares(workers: int) -> tuple[int, int]:
    """The shares whose main and whose side file the other shares' files merge into:
    different shares, so each merge thread writes a file the other does not read."""
    return 0, 1 % workers


class Parts:
    """The workers' files, every key's rows folded up to `position`, one pair per share
    until `merge` makes them one pair."""

    def __init__(self, store: Store, files: list[PartFiles], position: int) -> None:
        self.store = store
        self.files = files
        self.position = position

    def merge(self) -> bool:
        """Copy the other shares' rows into one pair of files, which then holds every
        key's rows; False if two keys' rows collided (the files are then useless).

        Done outside the store's writer lock, into files without journal or fsync, in
        two threads: share 0's main file takes the other main files' rows while share 1's
        side file takes the other side files'. The swap then copies the pair into the
        emptied live tables, all of it by SQLite's transfer optimisation (records and
        index entries as stored), which a copy into tables that already hold rows cannot
        use (it must check uniqueness row by row)."""
        main, side = kept_shares(len(self.files))
        jobs = [
            (
                self.files[kept].file(group),
                [f.file(group) for k, f in enumerate(self.files) if k != kept],
                _tables(group),
            )
            for group, kept in ((False, main), (True, side))
        ]
        try:
            with ThreadPoolExecutor(len(jobs), thread_name_prefix="rebuild-merge") as pool:
                merged = list(pool.map(lambda job: self._merge(*job), jobs))
        except sqlite3.Error as e:  # a file gone or unreadable: no rebuild to swap
            raise StoreUnavailable(f"rebuild files unavailable: {e}") from e
        if not all(merged):
            return False
        self.files = [PartFiles(self.files[main].main, self.files[side].side)]
        return True

    @staticmethod
    def _merge(first: Path, others: list[Path], tables: list[str]) -> bool:
        """Copy `tables` of each of `others` into `first` (this thread's own connection)."""
        connection = sqlite3.connect(first, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode = OFF")
            connection.execute("PRAGMA synchronous = OFF")
            for k, file in enumerate(others):
                connection.execute(f'ATTACH DATABASE ? AS "part{k}"', (str(file),))
            connection.execute("BEGIN")
            for k in range(len(others)):
                for name in tables:
                    try:
                        connection.execute(
                            f'INSERT INTO main."{name}" SELECT * FROM "part{k}"."{name}"'
                        )
                    except sqlite3.IntegrityError:
                        return False  # no journal to roll back: the files are thrown away
            connection.execute("COMMIT")
            return True
        finally:
            connection.close()

    def catch_up(self, target: int, on_progress: Progress | None) -> None:
        """Fold each share's events after `position` up to `target` into its files (in
        this process: what arrived during the workers' fold is a small part of the log)."""
        for share, files in enumerate(self.files):
            fold_share(
                self.store, files, share, len(self.files), self.position, target, on_progress
            )
        self.position = target

    @property
    def attachments(self) -> dict[str, str]:
        """Schema name -> file, to attach the merged pair to the swap's connection."""
        (files,) = self.files
        return {"parts": str(files.main), "parts_side": str(files.side)}

    @staticmethod
    def copies() -> list[str]:
        """`INSERT … SELECT *` of the merged pair's rows into each (emptied) live table:
        records as stored. Both sides have the same columns in the same order, as the
        files' tables were made with the store's own DDL."""
        return [
            f'INSERT INTO main."{table.name}" SELECT * FROM '
            f'"{"parts_side" if table.name in SIDE_TABLES else "parts"}"."{table.name}"'
            for table in TABLES.projected
        ]


@contextmanager
def folded(store: Store, workers: int, on_progress: Progress | None) -> Iterator[Parts]:
    """The log up to its head folded into one temporary file per share across `workers`
    processes, removed again when the block ends."""
    path = store.database.path
    assert path is not None and workers > 1
    target = store.positions()[1]
    directory = Path(tempfile.mkdtemp(prefix=_remove_stale(path), dir=os.path.dirname(path)))
    files = [PartFiles.of(directory, k) for k in range(workers)]
    children: list[_Child] = []
    try:
        for k in range(1, workers):
            children.append(_Child.start(store.database, files[k], k, workers, target))

        def progress(count: int) -> None:
            if on_progress is not None:
                on_progress(count)
            # The children's pages so far, without waiting for more.
            _receive(children, on_progress, block=False)

        fold_share(store, files[0], 0, workers, 0, target, progress)
        while any(not child.done for child in children):
            _receive(children, on_progress, block=True)
        for child in children:
            child.close()
        children.clear()
        yield Parts(store, files, target)
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
    store: Store,
    files: PartFiles,
    share: int,
    workers: int,
    after: int,
    target: int,
    on_progress: Progress | None,
) -> None:
    """Fold the events of share `share` of `workers` after `after` up to `target` into
    `files` (made with the store's DDL if new), a page (PAGE events, as the serial fold's)
    per transaction."""
    projector = Projector(TABLES)
    new = not files.main.exists()
    if new:
        with store.database.reading() as connection:
            schema = _schema(connection)
        for side in (False, True):
            _run(files.file(side), schema.tables(side))
    engine = _part_engine(files)
    try:
        with engine.connect() as part:

            def write(page: Sequence[tuple[int, LedgerEvent]], previous: int) -> None:
                with part.begin():
                    projector.project(part, projector.new_rowset(part), page, previous)

            def read(position: int) -> Sequence[tuple[int, LedgerEvent]]:
                with store.database.reading() as connection:
                    return store.event_log.read_share(
                        connection, share, workers, position, target, PAGE
                    )

            fold_pages(read, write, after, PAGE, on_progress)
            with part.begin():
                # Its share is folded up to `target` (the share's own last event may be
                # earlier), so a later catch-up of the files starts there.
                projector.set_position(part, target)
    finally:
        engine.dispose()
    if new:
        # Secondary indexes built once over the folded rows, sorted, rather than kept
        # up row by row (the fold reads rows by primary key only); only in the files
        # the others are merged into and the swap copies from.
        for side, kept in zip((False, True), kept_shares(workers), strict=True):
            if share == kept:
                _run(files.file(side), schema.indexes(side))


@dataclass(frozen=True)
class _Schema:
    """The DDL of the store's live read-model tables and their secondary indexes, each
    with the table it is for."""

    statements: list[tuple[str, str, str]]  # (type, table, sql)

    def tables(self, side: bool) -> list[str]:
        return self._of(False, side)

    def indexes(self, side: bool) -> list[str]:
        return self._of(True, side)

    def _of(self, index: bool, side: bool) -> list[str]:
        return [
            sql
            for type_, table, sql in self.statements
            if (type_ == "index") == index and (table in SIDE_TABLES) == side
        ]


def _schema(connection: Connection) -> _Schema:
    """The DDL of the store's live read-model tables, and of their secondary indexes."""
    names = [table.name for table in (*TABLES.projected, TABLES.tracking)]
    marks = ", ".join("?" * len(names))
    rows = connection.exec_driver_sql(
        f"SELECT type, tbl_name, sql FROM sqlite_schema WHERE tbl_name IN ({marks}) "
        "AND sql IS NOT NULL ORDER BY rowid",
        tuple(names),
    )
    return _Schema([(kind, table, sql) for kind, table, sql in rows])


def _run(file: Path, statements: list[str]) -> None:
    """DDL on a part file, on a connection of its own (the table names unqualified)."""
    connection = sqlite3.connect(file, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = OFF")
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()


def _part_engine(files: PartFiles) -> Engine:
    """A share's pair of files, the side file attached: the fold's unqualified table
    names find each table in whichever file holds it. The store's JSON codec (rows are
    copied as they are stored), no journal or fsync (a failed rebuild throws the files
    away)."""
    engine = create_engine(
        f"sqlite:///{files.main}",
        json_serializer=jsoncodec.dumps_sqlite,
        json_deserializer=jsoncodec.loads,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f'ATTACH DATABASE ? AS "{SIDE}"', (str(files.side),))
        for schema in ("main", SIDE):
            dbapi_connection.execute(f'PRAGMA "{schema}".journal_mode = OFF')
            dbapi_connection.execute(f'PRAGMA "{schema}".synchronous = OFF')

    return engine


class _Child:
    """A worker process (a fresh interpreter: `python -m
    sessionledger.infrastructure.maintenance.partition`) and
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
    def start(
        cls, database: Database, files: PartFiles, share: int, workers: int, target: int
    ) -> _Child:
        reader, writer = os.pipe()
        # The parent's code, not whatever else the interpreter would find first.
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        arguments = (
            database.url,
            database.busy_timeout,
            files.main,
            files.side,
            share,
            workers,
            target,
            writer,
        )
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sessionledger.infrastructure.maintenance.partition",
                    *map(str, arguments),
                ],
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
    url, busy_timeout, main, side, share, workers, target, fd = arguments
    with os.fdopen(int(fd), "w", buffering=1) as report:
        try:
            store = Store(Database(url, busy_timeout=float(busy_timeout)))
            try:
                with collector_at_ease():
                    fold_share(
                        store,
                        PartFiles(Path(main), Path(side)),
                        int(share),
                        int(workers),
                        0,
                        int(target),
                        lambda n: print(f"page {n}", file=report),
                    )
            finally:
                store.close()
            print("done", file=report)
        except BaseException as e:
            text = " ".join(f"{type(e).__name__}: {e}".split())  # one line
            print(f"error {text}", file=report)
            raise SystemExit(1) from None


if __name__ == "__main__":
    _work(sys.argv[1:])
