"""Stored SQLite timestamps keep SQLAlchemy's DATETIME text, so existing files stay
readable and text comparisons in SQL stay chronological."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionledger.projections.rows import EntryRow, RunRow
from sessionledger.projections.tables import TABLES, in_field_order, sqlite_text


@given(st.datetimes(timezones=st.just(UTC)))
def testsqlite_text_is_sqlalchemys_fixed_width_format(moment: datetime) -> None:
    v = moment
    assert sqlite_text(v) == (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def testsqlite_text_orders_like_the_moments(a: datetime, b: datetime) -> None:
    assert (sqlite_text(a) < sqlite_text(b)) == (a < b)


@given(st.datetimes(timezones=st.timezones()) | st.datetimes(timezones=st.just(UTC)))
def test_sqlite_bind_processor_stores_the_fixed_width_utc_text(moment: datetime) -> None:
    from sqlalchemy.dialects import sqlite

    from sessionledger.projections.tables import UTCDateTime

    dialect = sqlite.dialect()
    column_type = UTCDateTime()
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert process(moment) == column_type.process_bind_param(moment, dialect)
    assert process(moment) == sqlite_text(moment.astimezone(UTC))
    assert process(None) is None


def test_fold_twins_keep_their_own_text() -> None:
    """Two wall times that compare equal in one zone (fold 0 and 1 of a repeated hour)
    are different moments, stored as such."""
    from zoneinfo import ZoneInfo

    first = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    second = first.replace(fold=1)
    assert first == second  # same tzinfo: compared as wall times
    assert sqlite_text(first) == "2026-11-01 05:30:00.000000"
    assert sqlite_text(second) == "2026-11-01 06:30:00.000000"


def test_columns_are_selected_in_the_rows_field_order() -> None:
    # Migrations append columns; a row may declare the field anywhere.
    for table, row_type in [(TABLES.runs, RunRow), (TABLES.entries, EntryRow)]:
        columns = in_field_order(table, row_type)
        assert [c.name for c in columns] == [f.name for f in fields(row_type)]
    with pytest.raises(TypeError):
        in_field_order(TABLES.runs, EntryRow)
