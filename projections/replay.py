"""Replay: fold a log in memory with the same fold, and compare with stored read models.

Used by the tests of replay equals live (docs/invariants.md, rule 3) and by `verify`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, select

from sessionledger.domain.events import LedgerEvent
from sessionledger.projections.rows import (
    EntryRow,
    GenerationRow,
    ReceiptRow,
    RunRow,
    SessionRow,
    row_values,
)
from sessionledger.projections.state import RowSet
from sessionledger.projections.tables import ReadModelTables

RowsByTable = dict[str, dict[Any, Any]]


@dataclass(frozen=True, slots=True)
class Mismatch:
    table: str
    key: str
    field: str
    stored: Any
    expected: Any


def replay(log: Iterable[tuple[int, LedgerEvent]]) -> RowSet:
    """Every read model as a fresh fold of the given log would have it."""
    rows = RowSet()
    for position, event in log:
        rows.apply(event, position)
    return rows


def replayed_rows(rows: RowSet) -> RowsByTable:
    return {
        "sessions": {k: v for k, v in rows.sessions.rows.items() if v is not None},
        "generations": {k: v for k, v in rows.generations.rows.items() if v is not None},
        "runs": {k: v for k, v in rows.runs.rows.items() if v is not None},
        "entries": {(e.session_id, e.seq): e for e in rows.entries},
        "receipts": {r.event_id: r for r in rows.receipts},
    }


def stored_rows(connection: Connection, tables: ReadModelTables) -> RowsByTable:
    def load(table: Table, row_type: Any, key: Any) -> dict[Any, Any]:
        result = connection.execute(select(table))
        built = (row_type(**r._mapping) for r in result)
        return {key(r): r for r in built}

    return {
        "sessions": load(tables.sessions, SessionRow, lambda r: r.session_key),
        "generations": load(tables.generations, GenerationRow, lambda r: r.session_id),
        "runs": load(tables.runs, RunRow, lambda r: r.run_id),
        "entries": load(tables.entries, EntryRow, lambda r: (r.session_id, r.seq)),
        "receipts": load(tables.receipts, ReceiptRow, lambda r: r.event_id),
    }


def compare(stored: RowsByTable, expected: RowsByTable) -> list[Mismatch]:
    """Field-by-field differences between stored rows and the expected (replayed) ones."""
    mismatches: list[Mismatch] = []
    for table, expected_rows in expected.items():
        stored_rows_ = stored[table]
        for key in sorted(set(stored_rows_) | set(expected_rows), key=str):
            have, want = stored_rows_.get(key), expected_rows.get(key)
            if have is None or want is None:
                mismatches.append(Mismatch(table, str(key), "*", have, want))
                continue
            have_values, want_values = row_values(have), row_values(want)
            for name, value in want_values.items():
                if have_values[name] != value:
                    mismatches.append(Mismatch(table, str(key), name, have_values[name], value))
    return mismatches
