"""The projector: folds log entries after its tracking position into the read-model tables.

It writes rows and the new tracking position through the caller's connection, so
both commit in the caller's transaction (exactly once, SPEC §4.4). The live
path projects a command's own events in the command's transaction; `catch_up`
folds anything the tracking position has not seen yet (after a restart, a
rebuild into fresh tables, or events written by an older version).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, text, update
from sqlalchemy.orm import Session

from domain.events import LedgerEvent
from projections.fold import Transition
from projections.rows import GenerationRow, ReceiptRow, RunRow, SessionRow, row_values
from projections.state import RowSet
from projections.tables import EVENTS_TABLE, PROJECTION_NAME, ReadModelTables

# (position, event) pairs after a position, at most `limit` of them.
LogReader = Callable[[int, int], Sequence[tuple[int, LedgerEvent]]]
Executor = Connection | Session

CATCH_UP_PAGE = 1000
IN_CHUNK = 500  # keys per IN (…): stay under bind-parameter limits


def core(executor: Executor) -> Connection:
    """The Core connection of the caller's transaction: statements through an ORM Session
    pay for ORM bookkeeping the projector never uses (a third of a single-event command)."""
    return executor.connection() if isinstance(executor, Session) else executor


def _in(table: Table, column: Any) -> Any:
    """SELECT * … WHERE column IN (:keys), built once and expanded per call."""
    return select(table).where(column.in_(bindparam("keys", expanding=True)))


class SqlRowLoader:
    """Loads rows for the fold, one query per table per batch."""

    def __init__(self, executor: Executor, tables: ReadModelTables) -> None:
        self.executor = core(executor)
        self.tables = tables

    def load_sessions(self, keys: Iterable[str]) -> dict[str, SessionRow]:
        t = self.tables.sessions
        return {r.session_key: r for r in self._load(t, t.c.session_key, keys, SessionRow)}

    def load_generations(self, session_ids: Iterable[str]) -> dict[str, GenerationRow]:
        t = self.tables.generations
        return {r.session_id: r for r in self._load(t, t.c.session_id, session_ids, GenerationRow)}

    def load_runs(self, run_ids: Iterable[str]) -> dict[str, RunRow]:
        t = self.tables.runs
        return {r.run_id: r for r in self._load(t, t.c.run_id, run_ids, RunRow)}

    def _load(self, table: Table, column: Any, keys: Iterable[str], row_type: Any) -> list[Any]:
        keys = list(keys)
        rows: list[Any] = []
        query = _statements(table, column)
        for start in range(0, len(keys), IN_CHUNK):
            result = self.executor.execute(query, {"keys": keys[start : start + IN_CHUNK]})
            rows.extend(row_type(**row._mapping) for row in result)
        return rows


class Projector:
    def __init__(self, tables: ReadModelTables) -> None:
        self.tables = tables
        t = tables
        self._updates = {
            name: _update_statement(table, key)
            for name, table, key in (
                ("sessions", t.sessions, "session_key"),
                ("generations", t.generations, "session_id"),
                ("runs", t.runs, "run_id"),
            )
        }
        tracking = t.tracking
        self._position = select(tracking.c.notification_id).where(
            tracking.c.application_name == PROJECTION_NAME
        )
        self._move = (
            update(tracking)
            .where(
                tracking.c.application_name == PROJECTION_NAME,
                tracking.c.notification_id == bindparam("previous"),
            )
            .values(notification_id=bindparam("position"))
        )
        self._head = text(f"SELECT max(id) FROM {EVENTS_TABLE}")
        self._receipts = _in(t.receipts, t.receipts.c.event_id)

    # tracking --------------------------------------------------------------------------

    def position(self, executor: Executor) -> int:
        value = core(executor).execute(self._position).scalar()
        return int(value or 0)

    def _track(self, executor: Executor, previous: int, position: int) -> None:
        t = self.tables.tracking
        executor = core(executor)
        if previous == 0 and position > 0:
            exists = executor.execute(
                select(t.c.notification_id).where(t.c.application_name == PROJECTION_NAME)
            ).first()
            if exists is None:
                executor.execute(
                    insert(t).values(application_name=PROJECTION_NAME, notification_id=position)
                )
                return
        done = executor.execute(self._move, {"previous": previous, "position": position})
        if done.rowcount != 1:  # type: ignore[attr-defined]
            # someone else moved the position: never apply twice
            raise RuntimeError(f"tracking position moved under the projector (expected {previous})")

    # projecting ------------------------------------------------------------------------

    def new_rowset(self, executor: Executor) -> RowSet:
        return RowSet(SqlRowLoader(executor, self.tables))

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

    def log_head(self, executor: Executor) -> int:
        value = core(executor).execute(self._head).scalar()
        return int(value or 0)

    def flush(self, executor: Executor, rowset: RowSet) -> None:
        t = self.tables
        executor = core(executor)
        for name, table, rows in (
            ("sessions", t.sessions, rowset.sessions),
            ("generations", t.generations, rowset.generations),
            ("runs", t.runs, rowset.runs),
        ):
            inserts, updates, deletes = rows.changes()
            if inserts:
                executor.execute(insert(table), [_values(r) for r in inserts])
            if updates:
                executor.execute(self._updates[name], [_keyed(r) for r in updates])
            if deletes:
                key = table.primary_key.columns.values()[0]
                executor.execute(delete(table).where(key.in_(deletes)))
        if rowset.entries:
            executor.execute(insert(t.entries), [_values(e) for e in rowset.entries])
        if rowset.pruned:
            executor.execute(delete(t.entries).where(t.entries.c.session_id.in_(rowset.pruned)))
        if rowset.receipts:
            executor.execute(insert(t.receipts), [_values(r) for r in rowset.receipts])
        rowset.flushed()

    def receipts(self, executor: Executor, event_ids: Iterable[str]) -> dict[str, ReceiptRow]:
        ids = list(event_ids)
        found: dict[str, ReceiptRow] = {}
        executor = core(executor)
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start : start + IN_CHUNK]
            for row in executor.execute(self._receipts, {"keys": chunk}):
                found[row.event_id] = ReceiptRow(**row._mapping)
        return found


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _statements(table: Table, column: Any) -> Any:
    key = (table.name, column.name)
    if key not in _STATEMENTS:
        _STATEMENTS[key] = _in(table, column)
    return _STATEMENTS[key]


def _update_statement(table: Table, key: str) -> Any:
    return (
        update(table)
        .where(table.c[key] == bindparam("key_"))
        .values({c.name: bindparam(c.name) for c in table.columns if c.name != key})
    )


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _values(row: Any) -> dict[str, Any]:
    """`row_values`, with each row class's field names looked up once."""
    names = _FIELD_NAMES.get(type(row))
    if names is None:
        names = _FIELD_NAMES[type(row)] = tuple(row_values(row))
    return {name: getattr(row, name) for name in names}


def _keyed(row: SessionRow | GenerationRow | RunRow) -> dict[str, Any]:
    values = _values(row)
    key = {SessionRow: "session_key", GenerationRow: "session_id", RunRow: "run_id"}[type(row)]
    values["key_"] = values.pop(key)
    return values
