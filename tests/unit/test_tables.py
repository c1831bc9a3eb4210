"""Stored SQLite timestamps keep SQLAlchemy's DATETIME text, so existing files stay
readable and text comparisons in SQL stay chronological."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from projections.tables import _sqlite_text


@given(st.datetimes(timezones=st.just(UTC)))
def test_sqlite_text_is_sqlalchemys_fixed_width_format(moment: datetime) -> None:
    v = moment
    assert _sqlite_text(v) == (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def test_sqlite_text_orders_like_the_moments(a: datetime, b: datetime) -> None:
    assert (_sqlite_text(a) < _sqlite_text(b)) == (a < b)


@given(st.datetimes(timezones=st.timezones()) | st.datetimes(timezones=st.just(UTC)))
def test_sqlite_bind_processor_stores_process_bind_params_text(moment: datetime) -> None:
    from sqlalchemy.dialects import sqlite

    from projections.tables import UTCDateTime

    dialect = sqlite.dialect()
    column_type = UTCDateTime()
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert process(moment) == column_type.process_bind_param(moment, dialect)
    assert process(moment) == _sqlite_text(moment.astimezone(UTC))
    assert process(None) is None
