"""A large SQLite rebuild's fold, spread over worker processes by key.

A key's rows (its pointer, generations, runs, entries, receipts) depend only on its own
events: the write path refuses a sessionId, runId or eventId another key already uses.
So worker k of W folds only the events whose `originator_id` (the key's aggregate id)
falls in its share, decided in SQL before anything is decoded, with the same Projector
and fold as the serial path, into a temporary SQLite file of its own (the shadow
tables' schema, its own tracking row): the workers never queue for the store's single
writer lock. The parent is worker 0; workers 1..W-1 are spawned processes, fresh
interpreters (never forked: the parent may hold threads and open connections).

When every worker succeeded, the parent copies the files' rows into the store's
`*_shadow` tables (in transactions of MERGE_ROWS rows, so writers keep going), then
sets the shadow's position to the log head the workers folded up to; the rebuild's
catch-up and swap then run as they always did. A primary-key collision in that copy
means two keys' rows were not independent after all: the caller clears the shadow and
folds serially instead. A worker that fails or dies fails the fold (the caller clears
the shadow): never half a shadow.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    literal_column,
    make_url,
    select,
)
from sqlalchemy.schema import CreateTable

from domain.errors import StoreUnavailable
from domain.events import LedgerEvent
from infrastructure import jsoncodec
from infrastructure.collector import collector_at_ease
from projections.projector import Projector
from projections.raw import RawSelect
from projections.tables import PROJECTION_NAME, SHADOW

if TYPE_CHECKING:
    from infrastructure.ledger import Ledger

Progress = Callable[[int], None]

PARTITION_FROM = 50_000  # log events from which a SQLite rebuild folds in worker processes
# Processes folding at once, the parent included: each holds its own interpreter and
# page of rows (about 80-100 MB), and the copy and swap after them stay serial.
MAX_WORKERS = 2
PAGE = 2000  # events per worker transaction, as the serial fold's pages
MERGE_ROWS = 20_000  # rows per transaction copying the workers' rows into the shadow
_HEX = "0123456789ABCDEF"


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


def fold(ledger: Ledger, workers: int, on_progress: Progress | None) -> int | None:
    """Fold the log up to its head into the (cleared) shadow tables across `workers`
    processes; the shadow's position, or None after a collision (the shadow is left
    empty and every event was reported to `on_progress` once)."""
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

        fold_share(ledger, files[0], 0, workers, target, progress)
        while any(not child.done for child in children):
            _receive(children, on_progress, block=True)
        if not _merge(ledger, path, files, target):
            return None
        return target
    finally:
        for child in children:
            child.close()
        shutil.rmtree(directory, ignore_errors=True)


def _remove_stale(path: str) -> str:
    """The prefix of this store's rebuild directories, with those a rebuild left behind
    removed (its process was killed before its `finally`). Named after the store, so a
    rebuild never touches another store's beside it; one that is still running for
    this store has lost its shadow to this rebuild already and fails anyway."""
    prefix = f".{os.path.basename(path)}.rebuild-"
    for stale in Path(os.path.dirname(path)).glob(f"{glob.escape(prefix)}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return prefix


def fold_share(
    ledger: Ledger, file: Path, share: int, workers: int, target: int, on_progress: Progress
) -> int:
    """Fold the events of share `share` of `workers` up to `target` into `file`."""
    digits = [d for d in _HEX if int(d, 16) % workers == share]
    events = ledger.event_log.events
    c = events.c
    # The aggregate id's last hex digit (SQLite stores its 16 bytes): uniform over keys.
    page_query = RawSelect(
        select(c.id, c.originator_id, c.originator_version, c.topic, c.state)
        .where(
            c.id > bindparam("after"),
            c.id <= bindparam("target"),
            func.substr(func.hex(c.originator_id), 32, 1).in_(
                [literal_column(f"'{d}'") for d in digits]  # constants: no expanding IN
            ),
        )
        .order_by(c.id)
        .limit(bindparam("limit")),
        decoders={1: _hex},
    )
    # The log's own decoder (the mapper's, from the stored bytes), as EventLog.read uses.
    decode: Callable[..., tuple[int, LedgerEvent]] = ledger.event_log._decode
    projector = Projector(SHADOW)
    engine = _part_engine(file)
    folded = 0
    try:
        with engine.connect() as part:
            with part.begin():
                for table in (*SHADOW.projected, SHADOW.tracking):
                    part.execute(CreateTable(table))
            position = 0
            while True:
                with ledger.database.reading() as connection:
                    page: Sequence[tuple[int, LedgerEvent]] = page_query.rows(
                        connection, decode, after=position, target=target, limit=PAGE
                    )
                if not page:
                    return folded
                with part.begin():
                    projector.project(part, projector.new_rowset(part), page, position)
                position = page[-1][0]
                folded += len(page)
                on_progress(len(page))
                if len(page) < PAGE:
                    return folded
    finally:
        engine.dispose()


def _hex(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


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
    the pipe it reports on, a line per message: `page N`, `done N` or `error TEXT`.

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
    """A worker process: fold its share, reporting each page, then its count or error."""
    url, busy_timeout, file, share, workers, target, fd = arguments
    with os.fdopen(int(fd), "w", buffering=1) as report:
        try:
            from infrastructure.database import Database
            from infrastructure.ledger import Ledger

            ledger = Ledger(Database(url, busy_timeout=float(busy_timeout)))
            try:
                with collector_at_ease():
                    count = fold_share(
                        ledger,
                        Path(file),
                        int(share),
                        int(workers),
                        int(target),
                        lambda n: print(f"page {n}", file=report),
                    )
            finally:
                ledger.close()
            print(f"done {count}", file=report)
        except BaseException as e:
            text = " ".join(f"{type(e).__name__}: {e}".split())  # one line
            print(f"error {text}", file=report)
            raise SystemExit(1) from None


def _merge(ledger: Ledger, path: str, files: list[Path], target: int) -> bool:
    """The workers' rows into the store's shadow tables, then its position `target`;
    False if two workers wrote the same key (the caller clears what was copied).

    In transactions of MERGE_ROWS rows each, so writers are not held up for the whole
    copy (about a second per 100,000 events): until the position is set nothing reads
    the shadow, and a rebuild or verify that reset it meanwhile is noticed (its position
    is set, or its pages collide with these rows and fail it)."""
    # A plain connection: ATTACH is refused inside a transaction, and the store's own
    # connections begin theirs as they are handed out. Its busy handler queues it with
    # the other writers.
    connection = sqlite3.connect(
        path, timeout=ledger.database.busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        # The shadow is derived data: the swap's own commit makes these pages durable.
        connection.execute("PRAGMA synchronous = NORMAL")
        for k, file in enumerate(files):
            connection.execute(f"ATTACH DATABASE ? AS part{k}", (str(file),))
        for table in SHADOW.projected:
            columns = ", ".join(f'"{c.name}"' for c in table.columns)
            for k in range(len(files)):
                source = f"part{k}.{table.name}"
                (last,) = connection.execute(f"SELECT max(rowid) FROM {source}").fetchone()
                for start in range(0, last or 0, MERGE_ROWS):
                    copied = _copy(
                        connection,
                        f"INSERT INTO main.{table.name} ({columns}) SELECT {columns} "
                        f"FROM {source} WHERE rowid > ? AND rowid <= ?",
                        (start, start + MERGE_ROWS),
                    )
                    if not copied:
                        return False
        return _copy(
            connection,
            f"INSERT INTO main.{SHADOW.tracking.name} (application_name, notification_id) "
            "VALUES (?, ?)",
            (PROJECTION_NAME, target),
        )
    except sqlite3.OperationalError as e:
        raise StoreUnavailable(f"database unavailable: {e}") from e
    finally:
        connection.close()


def _copy(connection: sqlite3.Connection, sql: str, parameters: tuple[Any, ...]) -> bool:
    """One merge transaction; False (rolled back) on a key collision."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if connection.execute(
            f"SELECT 1 FROM main.{SHADOW.tracking.name} WHERE application_name = ?",
            (PROJECTION_NAME,),
        ).fetchone():
            # Another rebuild or verify began folding into the shadow meanwhile.
            raise StoreUnavailable(
                "another rebuild or verify is using the shadow tables; retry when it is done"
            )
        connection.execute(sql, parameters)
    except sqlite3.IntegrityError:
        connection.execute("ROLLBACK")
        return False
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return True


if __name__ == "__main__":
    _work(sys.argv[1:])
