"""Compiled statements pack a row's parameters with one generated function per statement;
it must give exactly what the general path (attrgetter + each bind processor) gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from sqlalchemy import BigInteger, Column, Dialect, LargeBinary, MetaData, Table, Text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy_utils.types.uuid import UUIDType

from sessionledger.infrastructure.application import _insert_event
from sessionledger.projections.projector import _insert_row, _update
from sessionledger.projections.rows import EntryRow, GenerationRow, ReceiptRow
from sessionledger.projections.statements import CompiledStatement
from sessionledger.projections.tables import TABLES

T = datetime(2026, 11, 22, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
ROWS: list[tuple[Any, Any]] = [
    (TABLES.receipts, ReceiptRow("e1", "s1", None, "applied", 7, T)),
    (
        TABLES.entries,
        EntryRow(
            "s1",
            3,
            "m1",
            None,
            "assistant",
            {"text": ["é", 2**70]},
            T,
            "runner",
            "r1",
            "h",
            9,
            T.astimezone(UTC),
        ),
    ),
    (
        TABLES.generations,
        GenerationRow(
            "s1",
            "k",
            None,
            None,
            "new",
            "current",
            T,
            1,
            None,
            None,
            "running",
            ("r1", "r2"),
            "r2",
            None,
            T,
            None,
            None,
            1,
            2,
            3,
            4,
            "m",
            None,
            T,
            5,
            True,
            "h",
            {"cli": "x"},
            {"model": None},
            0,
            T,
            9,
        ),
    ),
]


def plain(parameters: Any) -> Any:
    """psycopg's Json wrappers compare by identity: compare what they wrap."""
    values = parameters.items() if isinstance(parameters, dict) else enumerate(parameters)
    return {k: (type(v), v.obj) if hasattr(v, "obj") else v for k, v in values}


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()])
@pytest.mark.parametrize(("table", "row"), ROWS)
def test_generated_packer_matches_the_general_one(dialect: Dialect, table: Any, row: Any) -> None:
    key = table.primary_key.columns.values()[0].name
    every = (True,) * (len(table.columns) - 1)
    some = tuple(i % 3 == 0 for i in range(len(every)))  # an UPDATE of some columns
    for statement, renames in (
        (CompiledStatement(_insert_row(table), dialect), None),
        (CompiledStatement(_update(table, every), dialect), {"key_": key}),
        (CompiledStatement(_update(table, some), dialect), {"key_": key}),
    ):
        names = [(renames or {}).get(n, n) for n in statement.names]
        general = statement._general(names)(row)
        packed = statement.row_parameters(row, renames)
        assert type(packed) is type(general)
        assert plain(packed) == plain(general)
        assert [plain(p) for p in statement.rows_parameters([row, row], renames)] == [
            plain(general),
            plain(general),
        ]


def test_attributes_that_are_not_identifiers_take_the_general_path() -> None:
    statement = CompiledStatement(_insert_row(TABLES.receipts), sqlite.dialect())
    assert statement._generated(["event_id", "class"]) is None


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()])
def test_a_memoized_parameter_packs_what_its_processor_makes(dialect: Dialect) -> None:
    # The library's events table, as far as its insert goes.
    table = Table(
        "events",
        MetaData(),
        Column("originator_id", UUIDType(), nullable=False),
        Column("originator_version", BigInteger, nullable=False),
        Column("topic", Text, nullable=False),
        Column("state", LargeBinary),
    )
    ids = [uuid4(), uuid4(), UUID(int=0)]
    events = [StoredEvent(ids[i % 3], i, "topic", b'{"n":%d}' % i) for i in range(7)]
    plain_statement = CompiledStatement(_insert_event(table), dialect)
    memoized = CompiledStatement(_insert_event(table), dialect)
    before = memoized.rows_parameters(events)  # a packer made before memoizing is dropped
    memoized.memoize("originator_id")
    memoized.memoize("originator_id")  # once is enough; twice changes nothing
    expected = [plain(p) for p in plain_statement.rows_parameters(events)]
    assert [plain(p) for p in before] == expected
    assert [plain(p) for p in memoized.rows_parameters(events)] == expected
    assert [plain(memoized.row_parameters(e)) for e in events] == expected
    # Converted once per id: the rows of one aggregate share the converted value.
    packed = memoized.rows_parameters(events)
    at = memoized.names.index("originator_id")
    value = (lambda p: p[at]) if memoized.positional else (lambda p: p["originator_id"])
    assert value(packed[0]) is value(packed[3])
