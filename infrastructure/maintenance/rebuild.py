"""Rebuild every read model from the log while the store keeps serving.

The log is folded into the `*_shadow` tables page by page (infrastructure.maintenance
.shadow); then one write transaction takes the writer lock, folds the few events that
arrived meanwhile into the shadow, and replaces the live tables' contents with the
shadow's: readers see the old rows until it commits, then the new ones.

A large SQLite rebuild folds in worker processes instead, each its share of the keys,
into files of their own, merged into one pair that the swap copies straight into the
live tables (infrastructure.maintenance.partition): no shadow tables to fill and clear.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Executable, Table, select, text

from sessionledger.infrastructure.collector import collector_at_ease
from sessionledger.infrastructure.database import translate_faults
from sessionledger.infrastructure.maintenance import partition
from sessionledger.infrastructure.maintenance.shadow import Progress, Shadow, busy
from sessionledger.infrastructure.store import Store
from sessionledger.projections.projector import Executor, Projector
from sessionledger.projections.tables import SHADOW, TABLES

CATCH_UP_UNDER_LOCK = 1000  # events a rebuild may leave for its swap (folded under the lock)


def rebuild(
    store: Store,
    on_progress: Progress = None,
    *,
    workers: int | None = None,
    partition_from: int = partition.PARTITION_FROM,
) -> int:
    """Rebuild every read model from the log while the store keeps serving; the position
    the read models then stand at.

    A SQLite file whose log holds `partition_from` events or more is folded by `workers`
    processes (default: the cores available, at most partition.MAX_WORKERS), each its
    share of the keys (infrastructure.maintenance.partition); smaller logs, PostgreSQL
    and in-memory stores fold in this process."""
    with collector_at_ease():
        return _rebuild(store, on_progress, workers, partition_from)


def _rebuild(store: Store, on_progress: Progress, workers: int | None, partition_from: int) -> int:
    shadow = Shadow(store)
    shadow.clear()
    if workers is None:
        workers = partition.default_workers()
    large = workers > 1 and store.database.path is not None
    if large and _log_size(store) >= partition_from:
        counted = 0

        def progress(count: int) -> None:
            nonlocal counted
            counted += count
            if on_progress is not None:
                on_progress(count)

        position = _rebuild_partitioned(store, workers, progress)
        if position is not None:
            return position
        # Two keys' rows collided: fold serially, its events not reported twice.
        on_progress = _skipping(counted, on_progress)
    shadow.fold(on_progress)
    _catch_up_before_swap(shadow.behind, lambda: shadow.fold(on_progress))

    sqlite = store.database.dialect == "sqlite"

    def swap(session: Executor) -> int:
        # The events recorded since the last page, under the writer lock: none can follow.
        try:
            position = shadow.projector.catch_up(session, store.read_log(session), on_progress)
        except RuntimeError as e:
            raise busy() from e
        _clear_live(session)
        for live, twin in zip(TABLES.projected, SHADOW.projected, strict=True):
            session.execute(copy_rows(session, twin, live, sqlite=sqlite))
        _go_live(store, session, position)
        return position

    position = store.database.write(swap)
    shadow.clear()
    return position


def _clear_live(session: Executor) -> None:
    for table in reversed(TABLES.projected):
        session.execute(table.delete())


def _go_live(store: Store, session: Executor, position: int) -> None:
    """The live tables, just filled, stand at `position`; every process's cached rows
    are void."""
    store.projector.set_position(session, position)
    store.projector.new_epoch(session)


def _rebuild_partitioned(store: Store, workers: int, on_progress: Progress) -> int | None:
    """The log folded across worker processes, each into files of its own, the files
    merged into one pair and that copied straight into the live tables
    (infrastructure.maintenance.partition); None (nothing swapped) if two keys' rows
    collided. A worker file gone (another rebuild of the store removed it) is
    StoreUnavailable."""
    with translate_faults(), partition.folded(store, workers, on_progress) as parts:
        if not parts.merge():
            return None
        _catch_up_before_swap(
            lambda: _log_size(store) - parts.position,
            lambda: parts.catch_up(_log_size(store), on_progress),
        )

        def swap(session: Connection) -> int:
            _clear_live(session)
            for copy in parts.copies():
                session.exec_driver_sql(copy)
            _go_live(store, session, parts.position)
            # The events recorded since the file's position, under the writer lock: none
            # can follow. Folded by a projector of its own: the live one's row cache
            # holds rows from before the swap.
            return Projector(TABLES).catch_up(session, store.read_log(session), on_progress)

        return store.database.write_attached(swap, parts.attachments)


def _catch_up_before_swap(behind: Callable[[], int], fold: Callable[[], object]) -> None:
    """Fold what arrived during a rebuild's fold while it is more than a few pages (at
    most three passes): the swap folds the rest, under the writer lock."""
    for _pass in range(3):
        if behind() <= CATCH_UP_UNDER_LOCK:
            return
        fold()


def _log_size(store: Store) -> int:
    """The log's head: its events, near enough (ids are not reused)."""
    return store.positions()[1]


def _skipping(already: int, on_progress: Progress) -> Progress:
    """`on_progress` for a second fold over events already reported: the first `already`
    are not reported again."""
    if on_progress is None:
        return None
    left = already

    def progress(count: int) -> None:
        nonlocal left
        skipped = min(left, count)
        left -= skipped
        if count > skipped:
            on_progress(count - skipped)

    return progress


def copy_rows(session: Executor, source: Table, target: Table, *, sqlite: bool) -> Executable:
    """INSERT … SELECT of every row of `source` into the (emptied) `target`, a table of
    the same columns.

    On SQLite, `INSERT INTO target SELECT * FROM source` when both tables have the same
    columns in the same order (as their migrations made them): SQLite then copies the
    records as they are stored, b-tree by b-tree where the indexes match too (its
    transfer optimisation), about three times faster than column by column, and the
    swap holds the writer lock that much shorter. A column list in either place turns
    the optimisation off, so the orders are checked first: `*` with columns in
    different orders would put values in the wrong columns."""
    if sqlite and _columns(session, source) == _columns(session, target):
        return text(f'INSERT INTO "{target.name}" SELECT * FROM "{source.name}"')
    columns = [c.name for c in target.columns]
    return target.insert().from_select(columns, select(*(source.c[c] for c in columns)))


def _columns(session: Executor, table: Table) -> list[tuple[Any, ...]]:
    """A SQLite table's columns as stored: name, type, not null, default, primary key."""
    rows = session.execute(text(f'PRAGMA table_info("{table.name}")'))
    return [tuple(row[1:]) for row in rows]
