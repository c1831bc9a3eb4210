"""Independent reference implementations the property tests compare the code against.

They are written differently from the code on purpose (enumerate boundaries, work in
UTC instants), so a shared mistake is unlikely.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from sessionledger.domain.policies import FreshnessPolicy

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
T0 = datetime(2026, 3, 7, 0, 0, tzinfo=UTC)  # a week before the US DST change, 3 before the EU


def dst_transitions(year: int = 2026) -> list[tuple[str, datetime]]:
    """(zone, UTC instant to the hour) where one of ZONES changes its offset."""
    found: list[tuple[str, datetime]] = []
    for name in ZONES:
        zone = ZoneInfo(name)
        moment = datetime(year, 1, 1, tzinfo=UTC)
        while moment.year == year:
            step = moment + timedelta(hours=1)
            if moment.astimezone(zone).utcoffset() != step.astimezone(zone).utcoffset():
                found.append((name, step))
            moment = step
    return found


DST_TRANSITIONS = dst_transitions()


def daily_boundaries(policy: FreshnessPolicy, start: datetime, end: datetime) -> list[datetime]:
    """Every at_hour:00 local wall-clock boundary (first occurrence) between two instants."""
    zone = ZoneInfo(policy.timezone)
    day = (start.astimezone(zone) - timedelta(days=2)).date()
    last = (end.astimezone(zone) + timedelta(days=2)).date()
    found: list[datetime] = []
    while day <= last:
        wall = datetime(day.year, day.month, day.day, policy.at_hour, tzinfo=zone, fold=0)
        found.append(wall.astimezone(UTC))
        day += timedelta(days=1)
    return found


def expected_expiry(
    policy: FreshnessPolicy,
    *,
    opened_at: datetime,
    last_user_interaction_at: datetime | None,
    now: datetime,
) -> str | None:
    """Invariant 11, freshness: daily from the generation's start, idle from the last user
    interaction."""
    opened, at = opened_at.astimezone(UTC), now.astimezone(UTC)
    if policy.mode in ("daily", "idle+daily") and any(
        opened < b <= at for b in daily_boundaries(policy, opened, at)
    ):
        return "daily"
    if policy.mode in ("idle", "idle+daily"):
        since = (last_user_interaction_at or opened_at).astimezone(UTC)
        if at - since >= timedelta(minutes=policy.idle_minutes):
            return "idle"
    return None


def policies() -> st.SearchStrategy[FreshnessPolicy]:
    return st.builds(
        FreshnessPolicy,
        mode=st.sampled_from(["manual", "idle", "daily", "idle+daily"]),
        idle_minutes=st.sampled_from([1, 5, 30, 60, 90, 240, 1440]),
        at_hour=st.integers(0, 23),
        timezone=st.sampled_from(ZONES),
    )
