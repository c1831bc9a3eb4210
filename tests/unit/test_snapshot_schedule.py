"""When an aggregate is snapshotted: every SNAPSHOT_INTERVAL events, and for long
histories every power of two between a sixteenth and an eighth of the version (the
library's `snapshotting_intervals` is one fixed interval per aggregate class, hence a
schedule of our own; the snapshot itself goes into the library's snapshot store)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sessionledger.infrastructure.application import snapshot_due, snapshot_interval
from sessionledger.infrastructure.settings import SNAPSHOT_INTERVAL


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=1000))
def test_due_when_a_multiple_of_the_interval_is_crossed(before: int, added: int) -> None:
    after = before + added
    step = snapshot_interval(after)
    crossed = any(v % step == 0 for v in range(before + 1, after + 1))
    assert snapshot_due(before, after) == crossed


@given(st.integers(min_value=1, max_value=10**9))
def test_the_interval_is_bounded_by_the_version(version: int) -> None:
    step = snapshot_interval(version)
    assert step >= SNAPSHOT_INTERVAL
    assert step == SNAPSHOT_INTERVAL or (step & (step - 1) == 0 and version // 16 < step)
    assert step <= max(SNAPSHOT_INTERVAL, version // 8)


def test_a_long_history_is_snapshotted_logarithmically_often() -> None:
    points = [v for v in range(1, 1_000_001) if snapshot_due(v - 1, v)]
    # 20 up to 2,048, then 16 for each doubling: 20 + 16 * 8 + 14 (to 1,000,000).
    assert len(points) < 170  # a fixed interval of 100: 10,000
    assert all(b - a <= max(SNAPSHOT_INTERVAL, a // 8) for a, b in itertools.pairwise(points))
