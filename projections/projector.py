"""The projector: folds log entries after its tracking position into the read-model tables.

It writes rows and the new tracking position through the caller's connection, so
both commit in the caller's transaction (exactly once, docs/invariants.md, rule 4). The live
path projects a command's own events in the command's transaction; `catch_up`
folds anything the tracking position has not seen yet (after a restart, a
rebuild into fresh tables, or events written by an older version).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    BigInteger,
    Connection,
    Table,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import table as table_clause
from sqlalchemy.orm import Session

from sessionledger.domain.events import LedgerEvent
from sessionledger.projections.fold import Transition
from sessionledger.projections.raw import RawSelect, as_tuple, in_field_order
from sessionledger.projections.rows import (
    GenerationRow,
    ReceiptRow,
    RunRow,
    SessionRow,
    slot_builder,
)
from sessionledger.projections.state import RowSet
from sessionledger.projections.statements import (
    STATEMENTS,
    CompiledStatement,
    execute,
    execute_many,
)
from sessionledger.projections.tables import EVENTS_TABLE, PROJECTION_NAME, ReadModelTables

# (position, event) pairs after a position, at most `limit` of them.
LogReader = Callable[[int, int], Sequence[tuple[int, LedgerEvent]]]
Executor = Connection | Session

T = TypeVar("T")
CATCH_UP_PAGE = 1000
# A second row of the tracking table: a random number a rebuild replaces.
EPOCH_NAME = "read-models-epoch"
IN_CHUNK = 512  # keys per IN (…): stay under bind-parameter limits


def core(executor: Executor) -> Connection:
    """The Core connection of the caller's transaction: statements through an ORM Session
    pay for ORM bookkeeping the projector never uses (a third of a single-event command)."""
    return executor.connection() if isinstance(executor, Session) else executor


def _in_size(count: int) -> int:
    """IN lists are padded to a power of two (repeating a key), so a few compiled
    statements serve every batch size."""
    size = 1
    while size < count:
        size *= 2
    return size


def select_in(
    connection: Connection, table: Table, column: str, keys: Sequence[Any], row_type: type[T]
) -> list[T]:
    """Rows of `table` whose `column` is one of `keys`, as `row_type`, in chunks."""
    into = _BUILDERS[row_type]
    rows: list[T] = []
    for start in range(0, len(keys), IN_CHUNK):
        chunk = list(keys[start : start + IN_CHUNK])
        size = _in_size(len(chunk))
        chunk += [chunk[0]] * (size - len(chunk))
        query = _select(_select_in, table, column, size, row_type)
        rows.extend(query.rows(connection, into, **{f"k{i}": key for i, key in enumerate(chunk)}))
    return rows


_SELECTS: dict[tuple[Any, ...], RawSelect] = {}


def _select(build: Callable[..., Any], *args: Any) -> RawSelect:
    """The RawSelect of a statement builder and its arguments, built once."""
    key = (build, *args)
    query = _SELECTS.get(key)
    if query is None:
        query = _SELECTS[key] = RawSelect(build(*args))
    return query


def _select_in(table: Table, column: str, size: int, row_type: type) -> Any:
    # Selected in the row's field order: rows are built by position.
    return select(*in_field_order(table, row_type)).where(
        table.c[column].in_([bindparam(f"k{i}") for i in range(size)])
    )


_BUILDERS: dict[type, Callable[..., Any]] = {
    row_type: slot_builder(row_type) for row_type in (SessionRow, GenerationRow, RunRow, ReceiptRow)
}


class RowCache:
    """The session, generation and run rows the live projector last wrote or read,
    kept between commands so a command on a warm key issues no row queries.

    Only this process's writes keep it true, so the unit of work empties it whenever
    anything else may have changed the read models: another writer's events (the log
    head is not the one this process last committed), a catch-up, a rebuild (the
    read-model epoch changed), or a failed transaction (its rows never committed).
    Absent rows are remembered too (None). Bounded: a full table is emptied."""

    LIMIT = 20_000

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {"sessions": {}, "generations": {}, "runs": {}}
        self.epoch: int | None = None

    def clear(self) -> None:
        for rows in self.tables.values():
            rows.clear()

    def trust(self, fresh: bool, epoch: int | None) -> None:
        """Keep the rows only if nothing else changed the read models since."""
        if not fresh or epoch != self.epoch:
            self.clear()
        self.epoch = epoch

    def put(self, name: str, rows: dict[str, Any]) -> None:
        known = self.tables[name]
        if len(known) + len(rows) > self.LIMIT:
            known.clear()
        known.update(rows)


class SqlRowLoader:
    """Loads rows for the fold, one query per table per batch (rows the cache knows,
    none)."""

    def __init__(
        self, executor: Executor, tables: ReadModelTables, cache: RowCache | None = None
    ) -> None:
        self.executor = core(executor)
        self.tables = tables
        self.cache = cache
        # Each table's rows as they stand in storage: as this loader handed them out
        # (read, or cached as this process last wrote them), then as flushed.
        self.stored: dict[str, dict[str, Any]] = {"sessions": {}, "generations": {}, "runs": {}}

    def load_sessions(self, keys: Iterable[str]) -> dict[str, SessionRow]:
        return self._load("sessions", self.tables.sessions, SessionRow, keys)

    def load_generations(self, session_ids: Iterable[str]) -> dict[str, GenerationRow]:
        return self._load("generations", self.tables.generations, GenerationRow, session_ids)

    def load_runs(self, run_ids: Iterable[str]) -> dict[str, RunRow]:
        return self._load("runs", self.tables.runs, RunRow, run_ids)

    def _load(self, name: str, table: Table, row_type: Any, keys: Iterable[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        missing = list(keys)
        if self.cache is not None:
            known = self.cache.tables[name]
            wanted, missing = missing, []
            for key in wanted:
                if key not in known:
                    missing.append(key)
                elif (row := known[key]) is not None:
                    found[key] = row
        if missing:
            # The primary key is each table's first column (and each row's first field).
            key_column = table.primary_key.columns.values()[0].name
            rows = select_in(self.executor, table, key_column, missing, row_type)
            key_of = attrgetter(key_column)
            loaded = {key_of(row): row for row in rows}
            found.update(loaded)
            if self.cache is not None:
                self.cache.put(name, {key: loaded.get(key) for key in missing})
        self.stored[name].update(found)
        return found


class Positions(NamedTuple):
    position: int  # the tracking position: the last log entry folded
    head: int  # the log head
    epoch: int | None  # changes whenever the read models are rebuilt


class Projector:
    def __init__(self, tables: ReadModelTables, rows: RowCache | None = None) -> None:
        self.tables = tables
        self.rows = rows

    def _statement(
        self, connection: Connection, build: Callable[[Table], Any]
    ) -> CompiledStatement:
        return STATEMENTS.get(connection, build, self.tables.tracking)

    # tracking --------------------------------------------------------------------------

    def positions(self, executor: Executor) -> Positions:
        """Tracking position, log head and read-model epoch, in one statement."""
        connection = core(executor)
        ((position, head, epoch),) = _select(_positions, self.tables.tracking).rows(
            connection, as_tuple
        )
        return Positions(int(position or 0), int(head or 0), epoch)

    def new_epoch(self, executor: Executor) -> None:
        """Mark the read models as replaced (a rebuild): every process's row cache goes."""
        connection = core(executor)
        values = {"epoch": secrets.randbits(62)}
        execute(connection, self._statement(connection, _drop_epoch), values)
        execute(connection, self._statement(connection, _set_epoch), values)

    def position(self, executor: Executor) -> int:
        return self.positions(executor)[0]

    def log_head(self, executor: Executor) -> int:
        return self.positions(executor)[1]

    def set_position(self, executor: Executor, position: int) -> None:
        """The tracking position set outright, whatever it was: the read models were
        replaced wholesale (a rebuild's swap, a rebuild worker's file)."""
        connection = core(executor)
        tracking = self.tables.tracking
        connection.execute(delete(tracking).where(tracking.c.application_name == PROJECTION_NAME))
        values = {"application_name": PROJECTION_NAME, "notification_id": position}
        connection.execute(insert(tracking).values(values))

    def _track(self, executor: Executor, previous: int, position: int) -> None:
        connection = core(executor)
        values = {"previous": previous, "position": position}
        if execute(connection, self._statement(connection, _move), values) == 1:
            return
        if previous == 0 and not _select(_exists, self.tables.tracking).rows(connection, as_tuple):
            # No tracking row yet (a fresh store or fresh shadow tables): this is the first.
            execute(connection, self._statement(connection, _start), values)
            return
        # someone else moved the position: never apply twice
        raise RuntimeError(f"tracking position moved under the projector (expected {previous})")

    # projecting ------------------------------------------------------------------------

    def new_rowset(self, executor: Executor) -> RowSet:
        return RowSet(SqlRowLoader(executor, self.tables, self.rows))

    def project(
        self,
        executor: Executor,
        rowset: RowSet,
        recorded: Sequence[tuple[int, LedgerEvent]],
        previous: int,
    ) -> list[Transition]:
        """Fold recorded events (in log order) and write rows and tracking."""
        if not recorded:
            return []
        executor = core(executor)
        rowset.prefetch_for(event for _, event in recorded)
        transitions = [rowset.apply(event, position) for position, event in recorded]
        self.flush(executor, rowset)
        self._track(executor, previous, recorded[-1][0])
        return transitions

    def catch_up(
        self,
        executor: Executor,
        read_log: LogReader,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Fold every log entry after the tracking position; returns the new position."""
        position = self.position(executor)
        while True:
            page = read_log(position, CATCH_UP_PAGE)
            if not page:
                return position
            self.project(executor, self.new_rowset(executor), page, position)
            position = page[-1][0]
            if on_progress is not None:
                on_progress(len(page))

    def flush(self, executor: Executor, rowset: RowSet) -> None:
        t = self.tables
        connection = core(executor)
        loader = rowset.loader
        known = loader.stored if isinstance(loader, SqlRowLoader) else None
        for name, table, rows in (
            ("sessions", t.sessions, rowset.sessions),
            ("generations", t.generations, rowset.generations),
            ("runs", t.runs, rowset.runs),
        ):
            if self.rows is not None:
                self.rows.put(name, {key: rows.rows[key] for key in rows.dirty})
            inserts, updates, deletes = rows.changes()
            self._insert(connection, table, inserts)
            stored = known[name] if known is not None else None
            if updates:
                _update_changed(connection, table, updates, stored)
            if deletes:
                self._delete(connection, table, table.primary_key.columns.values()[0].name, deletes)
            if stored is not None:
                for key in rows.dirty:
                    stored[key] = rows.rows[key]
        self._insert(connection, t.entries, rowset.entries)
        if rowset.pruned:
            self._delete(connection, t.entries, "session_id", rowset.pruned)
        self._insert(connection, t.receipts, rowset.receipts)
        rowset.flushed()

    @staticmethod
    def _insert(connection: Connection, table: Table, rows: Sequence[Any]) -> None:
        if rows:
            statement = STATEMENTS.get(connection, _insert_row, table)
            execute_many(connection, statement, statement.rows_parameters(rows))

    @staticmethod
    def _delete(connection: Connection, table: Table, column: str, keys: Sequence[str]) -> None:
        statement = STATEMENTS.get(connection, _delete_by, table, column)
        execute_many(connection, statement, [statement.parameters({"key_": k}) for k in keys])

    def receipts(self, executor: Executor, event_ids: Iterable[str]) -> dict[str, ReceiptRow]:
        rows = select_in(
            core(executor), self.tables.receipts, "event_id", list(event_ids), ReceiptRow
        )
        return {r.event_id: r for r in rows}


def _insert_row(table: Table) -> Any:
    """INSERT of every column, bound by column name (= the row's attribute name)."""
    return insert(table).values({c.name: bindparam(c.name) for c in table.columns})


def _update(table: Table, assigned: tuple[bool, ...]) -> Any:
    """UPDATE of the non-key columns flagged in `assigned` (in table order), bound by
    column name; the key as `key_`."""
    key = table.primary_key.columns.values()[0]
    columns = [c for c in table.columns if c.name != key.name]
    return (
        update(table)
        .where(key == bindparam("key_"))
        .values({c.name: bindparam(c.name) for c, a in zip(columns, assigned, strict=True) if a})
    )


class _Updates(NamedTuple):
    changed: Callable[[Any, Any], tuple[bool, ...]]  # per non-key column, in table order
    every: tuple[bool, ...]  # every column assigned
    key_of: Callable[[Any], str]
    renames: dict[str, str]
    shapes: set[tuple[bool, ...]]  # column sets compiled so far


def _changed(names: list[str]) -> Callable[[Any, Any], tuple[bool, ...]]:
    """Tells, column by column, whether a row's value is not the stored row's."""

    def changed(before: Any, row: Any) -> tuple[bool, ...]:
        return tuple(getattr(before, n) is not getattr(row, n) for n in names)

    return changed


_UPDATES: dict[Table, _Updates] = {}
# Column sets per table beyond which an update assigns every column (bounds the
# compiled statements a long-lived process keeps).
SHAPES_KEPT = 256


def _update_changed(
    connection: Connection, table: Table, rows: list[Any], stored: dict[str, Any] | None
) -> None:
    """UPDATE each row, assigning only the columns whose value is not the stored row's
    (by identity: the fold carries unchanged values over as the same objects, and a
    value that is equal but not the same object is merely written again). SQLite
    rewrites every index with an assigned column, changed or not: a transcript append
    changes one of the generation row's four indexed columns. Rows of one column set
    go in one executemany; a row with no stored version known assigns every column."""
    plan = _UPDATES.get(table)
    if plan is None:
        key = table.primary_key.columns.values()[0].name
        names = [c.name for c in table.columns if c.name != key]
        plan = _UPDATES[table] = _Updates(
            _changed(names), (True,) * len(names), attrgetter(key), {"key_": key}, set()
        )
    changed, every, key_of, renames, shapes = plan
    by_shape: dict[tuple[bool, ...], list[Any]] = {}
    for row in rows:
        before = stored.get(key_of(row)) if stored is not None else None
        if before is None:
            shape = every
        else:
            shape = changed(before, row)
            if True not in shape:
                continue  # nothing to write
            if shape not in shapes:
                if len(shapes) >= SHAPES_KEPT:
                    shape = every
                else:
                    shapes.add(shape)
        group = by_shape.get(shape)
        if group is None:
            by_shape[shape] = [row]
        else:
            group.append(row)
    for shape, group in by_shape.items():
        statement = STATEMENTS.get(connection, _update, table, shape)
        execute_many(connection, statement, statement.rows_parameters(group, renames))


def _delete_by(table: Table, column: str) -> Any:
    return delete(table).where(table.c[column] == bindparam("key_"))


# The tracking position's statements (per tracking table: live or shadow).


def _positions(tracking: Table) -> Any:
    """The tracking position, the log head and the read-model epoch, in one round trip."""

    def tracked(name: str) -> Any:
        c = tracking.c
        return select(c.notification_id).where(c.application_name == name).scalar_subquery()

    events = table_clause(EVENTS_TABLE, column("id", BigInteger))
    head = select(func.max(events.c.id)).scalar_subquery()
    return select(tracked(PROJECTION_NAME), head, tracked(EPOCH_NAME))


def _drop_epoch(tracking: Table) -> Any:
    return delete(tracking).where(tracking.c.application_name == EPOCH_NAME)


def _set_epoch(tracking: Table) -> Any:
    return insert(tracking).values(application_name=EPOCH_NAME, notification_id=bindparam("epoch"))


def _move(tracking: Table) -> Any:
    return (
        update(tracking)
        .where(
            tracking.c.application_name == PROJECTION_NAME,
            tracking.c.notification_id == bindparam("previous"),
        )
        .values(notification_id=bindparam("position"))
    )


def _exists(tracking: Table) -> Any:
    return select(tracking.c.application_name).where(tracking.c.application_name == PROJECTION_NAME)


def _start(tracking: Table) -> Any:
    return insert(tracking).values(
        application_name=PROJECTION_NAME, notification_id=bindparam("position")
    )
