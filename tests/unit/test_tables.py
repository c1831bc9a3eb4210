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
