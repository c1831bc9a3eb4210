"""The rebuild's swap copies the shadow's rows into the live tables with SQLite's
`INSERT … SELECT *` only where both tables have the same columns in the same order
(infrastructure/maintenance/rebuild.py `copy_rows`); otherwise column by column, so no value
lands in another column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, insert, select

from sessionledger.infrastructure.maintenance.rebuild import copy_rows


def column(name: str) -> Column[Any]:
    return Column(name, Integer, primary_key=True) if name == "id" else Column(name, Text)


def tables(order_of_target: tuple[str, ...]) -> tuple[MetaData, Table, Table]:
    metadata = MetaData()
    source = Table("source", metadata, *map(column, ("id", "a", "b")))
    target = Table("target", metadata, *map(column, order_of_target))
    return metadata, source, target


def copy(tmp_path: Path, order_of_target: tuple[str, ...]) -> tuple[str, list[tuple[object, ...]]]:
    metadata, source, target = tables(order_of_target)
    engine = create_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(source), [{"id": 1, "a": "x", "b": "y"}])
        statement = copy_rows(connection, source, target, sqlite=True)
        connection.execute(statement)
        rows = connection.execute(select(target.c.id, target.c.a, target.c.b)).all()
    engine.dispose()
    return str(statement), [tuple(row) for row in rows]


def test_same_columns_in_the_same_order_are_copied_record_by_record(tmp_path: Path) -> None:
    sql, rows = copy(tmp_path, ("id", "a", "b"))
    assert sql == 'INSERT INTO "target" SELECT * FROM "source"'
    assert rows == [(1, "x", "y")]


def test_columns_in_another_order_are_copied_by_name(tmp_path: Path) -> None:
    sql, rows = copy(tmp_path, ("id", "b", "a"))
    assert "SELECT *" not in sql
    assert rows == [(1, "x", "y")]
