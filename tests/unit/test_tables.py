"""Rows are read by position (projections/queries.py): every read-model table declares
its columns in its row class's field order, live and shadow alike."""

from __future__ import annotations

from dataclasses import fields

import pytest
from sqlalchemy import Table

from projections.rows import EntryRow, GenerationRow, ReceiptRow, RunRow, SessionRow
from projections.tables import SHADOW, TABLES

ROWS = {
    "sessions": SessionRow,
    "generations": GenerationRow,
    "runs": RunRow,
    "entries": EntryRow,
    "receipts": ReceiptRow,
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_columns_are_in_row_field_order(name: str) -> None:
    for tables in (TABLES, SHADOW):
        table: Table = getattr(tables, name)
        assert [c.name for c in table.columns] == [f.name for f in fields(ROWS[name])]
