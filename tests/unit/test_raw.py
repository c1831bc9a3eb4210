"""projections/raw.py's pieces that need no database."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime

import pytest

from projections.raw import builder, in_field_order
from projections.rows import EntryRow, GenerationRow, RunRow
from projections.tables import TABLES

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_builder_builds_what_init_builds() -> None:
    values = ("s1", 3, "m3", None, "user", {"a": [1]}, NOW, "runner", "r1", "k", "p", "h", 9, NOW)
    built = builder(EntryRow)(*values)
    assert built == EntryRow(*values)
    assert [getattr(built, f.name) for f in fields(EntryRow)] == list(values)
    assert type(built) is EntryRow
    by_name = dict(zip([f.name for f in fields(EntryRow)], values, strict=True))
    assert builder(EntryRow)(**by_name) == EntryRow(**by_name)
    with pytest.raises(TypeError):
        builder(EntryRow)(*values[:-1])
    # Every field, defaults included, is given: the builder has no defaults.
    names = [f.name for f in fields(GenerationRow)]
    assert len(names) == builder(GenerationRow).__code__.co_argcount


def test_builder_refuses_classes_whose_init_does_more() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (NoSlots, PostInit, int):
        with pytest.raises(TypeError):
            builder(cls)


def test_columns_are_selected_in_the_rows_field_order() -> None:
    # Migrations append columns; a row may declare the field anywhere.
    for table, row_type in [(TABLES.runs, RunRow), (TABLES.entries, EntryRow)]:
        columns = in_field_order(table, row_type)
        assert [c.name for c in columns] == [f.name for f in fields(row_type)]
    with pytest.raises(TypeError):
        in_field_order(TABLES.runs, EntryRow)
