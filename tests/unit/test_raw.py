"""projections/raw.py's pieces that need no database."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import pytest

from sessionledger.projections.raw import in_field_order
from sessionledger.projections.rows import EntryRow, RunRow
from sessionledger.projections.tables import TABLES

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_columns_are_selected_in_the_rows_field_order() -> None:
    # Migrations append columns; a row may declare the field anywhere.
    for table, row_type in [(TABLES.runs, RunRow), (TABLES.entries, EntryRow)]:
        columns = in_field_order(table, row_type)
        assert [c.name for c in columns] == [f.name for f in fields(row_type)]
    with pytest.raises(TypeError):
        in_field_order(TABLES.runs, EntryRow)


def test_raw_parameters_are_what_construct_params_gives() -> None:
    """RawSelect packs the driver's parameters itself when every bind is a plain named
    one (no construct_params per call): the same values, converted by the same bind
    processors, and a missing value refused as SQLAlchemy refuses it."""
    import sqlalchemy.exc
    from sqlalchemy import bindparam, create_engine, select

    from sessionledger.projections.raw import RawSelect, as_tuple

    engine = create_engine("sqlite://")
    TABLES.metadata.create_all(engine)
    g = TABLES.generations
    with engine.begin() as connection:
        connection.execute(
            g.insert(),
            [
                {c.name: NOW if c.name.endswith("_at") else 0 for c in g.columns if not c.nullable}
                | {"session_id": f"s{i}", "session_key": f"k{i}", "bindings": {}, "overrides": {}}
                | {"active_run_ids": (), "resumable": i % 2 == 0, "updated_at": NOW}
                for i in range(4)
            ],
        )
        shapes = [
            # named binds, a bind processor (the timestamp), one bind used once each
            select(g.c.session_id).where(
                g.c.session_id.in_([bindparam("k0"), bindparam("k1")]),
                g.c.updated_at >= bindparam("since", type_=g.c.updated_at.type),
            ),
            # a literal (anonymous bind) and a bind with a default value
            select(g.c.session_id).where(
                g.c.session_key != "k3", g.c.session_id != bindparam("not", "s2")
            ),
            # the same bind twice
            select(g.c.session_id).where(
                (g.c.session_id == bindparam("k0")) | (g.c.session_key == bindparam("k0"))
            ),
        ]
        params = {"k0": "s0", "k1": "s1", "since": NOW}
        for statement in shapes:
            wanted = {k: v for k, v in params.items() if k in statement.compile().binds}
            expected = sorted(tuple(r) for r in connection.execute(statement, wanted))
            assert sorted(RawSelect(statement).rows(connection, as_tuple, **wanted)) == expected
            assert expected
        with pytest.raises(sqlalchemy.exc.InvalidRequestError, match="k1"):
            RawSelect(shapes[0]).rows(connection, as_tuple, k0="s0", since=NOW)
    engine.dispose()
