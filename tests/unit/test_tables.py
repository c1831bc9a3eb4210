"""Stored SQLite timestamps keep SQLAlchemy's DATETIME text, so existing files stay
readable and text comparisons in SQL stay chronological."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from sessionledger.projections.tables import sqlite_text


@given(st.datetimes(timezones=st.just(UTC)))
def test_sqlite_text_is_sqlalchemys_fixed_width_format(moment: datetime) -> None:
    v = moment
    assert sqlite_text(v) == (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def test_sqlite_text_orders_like_the_moments(a: datetime, b: datetime) -> None:
    assert (sqlite_text(a) < sqlite_text(b)) == (a < b)


@given(st.datetimes(timezones=st.timezones()) | st.datetimes(timezones=st.just(UTC)))
def test_sqlite_bind_processor_stores_process_bind_params_text(moment: datetime) -> None:
    from sqlalchemy.dialects import sqlite

    from sessionledger.projections.tables import UTCDateTime

    dialect = sqlite.dialect()
    column_type = UTCDateTime()
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert process(moment) == column_type.process_bind_param(moment, dialect)
    assert process(moment) == sqlite_text(moment.astimezone(UTC))
    assert process(None) is None


def _isoformat_text(moment: datetime) -> str:
    """The text before sqlite_text remembered moments: isoformat of the UTC moment."""
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:-6]


# Aware datetimes of every year a row can hold, with and without microseconds, in UTC,
# in IANA zones (DST gaps and folds) and fixed offsets, fold 0 and 1.
_moments = (st.datetimes(timezones=st.timezones()) | st.datetimes(timezones=st.just(UTC))).flatmap(
    lambda v: st.sampled_from(
        [v, v.replace(microsecond=0), v.replace(fold=1 - v.fold), v.replace(tzinfo=UTC)]
    )
)


@given(st.lists(_moments, min_size=1, max_size=8))
def test_remembered_text_is_isoformats_text(moments: list[datetime]) -> None:
    """The bound text is isoformat's, whether computed or remembered: each moment bound
    twice (as itself and as an equal copy) among other moments, equal or not."""
    from sessionledger.projections.tables import bind_sqlite

    for moment in [*moments, *moments, *(m.replace() for m in reversed(moments))]:
        try:
            expected = _isoformat_text(moment)
        except OverflowError:
            continue  # astimezone beyond year 1 or 9999 fails as it always did
        assert bind_sqlite(moment) == expected
        utc = moment.astimezone(UTC)
        assert sqlite_text(utc) == expected
        assert sqlite_text(utc.replace()) == expected


def test_fold_twins_keep_their_own_text() -> None:
    """Two wall times that compare equal in one zone (fold 0 and 1 of a repeated hour)
    are different moments; remembering one must not answer for the other."""
    from zoneinfo import ZoneInfo

    from sessionledger.projections.tables import bind_sqlite

    first = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    second = first.replace(fold=1)
    assert first == second  # same tzinfo: compared as wall times
    assert bind_sqlite(first) == "2026-11-01 05:30:00.000000"
    assert bind_sqlite(second) == "2026-11-01 06:30:00.000000"
    assert bind_sqlite(first) == "2026-11-01 05:30:00.000000"
    assert sqlite_text(first) == first.isoformat(" ", "microseconds")[:-6]
    assert sqlite_text(second) == second.isoformat(" ", "microseconds")[:-6]


def test_remembered_moments_are_bounded() -> None:
    from datetime import timedelta

    from sessionledger.projections.tables import _TEXTS, _TEXTS_KEPT

    start = datetime(2020, 1, 1, tzinfo=UTC)
    for i in range(3 * _TEXTS_KEPT):
        moment = start + timedelta(microseconds=i)
        assert sqlite_text(moment) == _isoformat_text(moment)
    assert len(_TEXTS) <= _TEXTS_KEPT
