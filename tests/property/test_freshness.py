"""Invariant 11, freshness by the right clock (docs/invariants.md), as pure properties
(no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.policies import FreshnessPolicy
from tests.property.oracles import DST_TRANSITIONS, T0, ZONES, expected_expiry, policies

# Offsets in seconds: dense around small values, reaching weeks (daily boundaries, DST).
offsets = st.one_of(
    st.integers(0, 3 * 3600),
    st.integers(0, 3 * 3600).map(lambda s: s - s % 900),
    st.integers(0, 60 * 86400),
    st.sampled_from([0, 59, 60, 3599, 3600, 86399, 86400]),
)
zones: st.SearchStrategy[tzinfo] = st.one_of(
    st.sampled_from([ZoneInfo(z) for z in ZONES]),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)


@st.composite
def moments(draw: st.DrawFn) -> tuple[datetime, datetime | None, datetime]:
    anchor = draw(st.one_of(st.just(T0), st.sampled_from([t for _, t in DST_TRANSITIONS])))
    opened = anchor + timedelta(seconds=draw(st.integers(-6 * 3600, 30 * 86400)))
    last = None
    if draw(st.booleans()):
        last = opened + timedelta(seconds=draw(offsets))
    now = (last or opened) + timedelta(seconds=draw(offsets))
    return opened, last, now


@settings(max_examples=1500)
@given(policies(), moments())
def test_expiry_matches_the_reference_clock(
    policy: FreshnessPolicy, times: tuple[datetime, datetime | None, datetime]
) -> None:
    # Invariant 11: daily from the generation's start, idle from the last user interaction.
    opened, last, now = times
    assert policy.expiry(opened_at=opened, last_interaction_at=last, now=now) == expected_expiry(
        policy, opened_at=opened, last_user_interaction_at=last, now=now
    )


@settings(max_examples=1500)
@given(policies(), moments(), zones, zones, zones)
def test_expiry_depends_on_instants_not_on_their_time_zone(
    policy: FreshnessPolicy,
    times: tuple[datetime, datetime | None, datetime],
    z1: tzinfo,
    z2: tzinfo,
    z3: tzinfo,
) -> None:
    # Invariant 11, "deterministic given now": the same instants, written in other zones (as an
    # aggregate reloaded from the log has them), must give the same answer.
    opened, last, now = times
    in_utc = policy.expiry(opened_at=opened, last_interaction_at=last, now=now)
    elsewhere = policy.expiry(
        opened_at=opened.astimezone(z1),
        last_interaction_at=last.astimezone(z2) if last else None,
        now=now.astimezone(z3),
    )
    assert elsewhere == in_utc


@settings(max_examples=1500)
@given(
    st.sampled_from(DST_TRANSITIONS),
    st.integers(-4 * 3600, 4 * 3600),
    st.integers(0, 4 * 3600),
    st.integers(-3, 3),
    st.sampled_from(["idle", "daily", "idle+daily"]),
    st.sampled_from([15, 30, 45, 60, 90, 120]),
)
def test_expiry_across_daylight_saving_changes(
    transition: tuple[str, datetime],
    opened_offset: int,
    elapsed: int,
    hour_offset: int,
    mode: str,
    idle_minutes: int,
) -> None:
    # Invariant 11 on the days clocks change, with every time written in the policy's own zone
    # (the way a gateway in that zone passes `now`): a daily boundary happens once, at its
    # first occurrence, and idle time is real elapsed time, not wall-clock difference.
    name, instant = transition
    zone = ZoneInfo(name)
    at_hour = ((instant.astimezone(zone) - timedelta(hours=1)).hour + hour_offset) % 24
    policy = FreshnessPolicy(
        mode=mode,  # type: ignore[arg-type]
        idle_minutes=idle_minutes,
        at_hour=at_hour,
        timezone=name,
    )
    opened = instant + timedelta(seconds=opened_offset)
    now = opened + timedelta(seconds=elapsed)
    got = policy.expiry(
        opened_at=opened.astimezone(zone), last_interaction_at=None, now=now.astimezone(zone)
    )
    assert got == expected_expiry(policy, opened_at=opened, last_user_interaction_at=None, now=now)


@given(policies(), moments(), st.integers(-30 * 365, 30 * 365))
def test_expiry_depends_on_the_instants_passed_not_on_when_it_is_asked(
    policy: FreshnessPolicy, times: tuple[datetime, datetime | None, datetime], days: int
) -> None:
    # Invariant 11: evaluation is deterministic given the now passed in (no wall clock
    # inside). With the boundaries at fixed UTC hours, moving every instant by whole days
    # (decades before or after today) moves the boundaries along: the answer must not
    # change, as it would if the policy read the real clock.
    policy = policy.model_copy(update={"timezone": "UTC"})
    opened, last, now = times
    shift = timedelta(days=days)
    moved = policy.expiry(
        opened_at=opened + shift,
        last_interaction_at=last + shift if last else None,
        now=now + shift,
    )
    assert moved == policy.expiry(opened_at=opened, last_interaction_at=last, now=now)


@given(policies(), moments())
def test_a_generation_never_expires_at_its_own_start(
    policy: FreshnessPolicy, times: tuple[datetime, datetime | None, datetime]
) -> None:
    opened, _, _ = times
    assert policy.expiry(opened_at=opened, last_interaction_at=None, now=opened) is None


interactions = st.sampled_from(["user", "heartbeat", "cron", "system"])


@given(
    policies(),
    st.lists(st.tuples(interactions, st.integers(0, 2 * 86400)), min_size=1, max_size=25),
)
def test_only_user_interactions_refresh_or_rotate(
    policy: FreshnessPolicy, steps: list[tuple[str, int]]
) -> None:
    # Invariant 11: heartbeat, cron and system never keep a session fresh and never rotate it;
    # user resolves rotate exactly when the reference clock says the generation expired.
    now = T0
    conversation = Conversation.open("agent:main:main", at=now, writer="ingress")
    conversation.collect_events()
    opened_at, last_user = now, None
    for interaction, advance in steps:
        now += timedelta(seconds=advance)
        before = conversation.current_session_id
        assert before is not None
        expected = (
            expected_expiry(
                policy, opened_at=opened_at, last_user_interaction_at=last_user, now=now
            )
            if interaction == "user"
            else None
        )
        resolution = conversation.resolve(
            now=now,
            interaction=interaction,  # type: ignore[arg-type]
            policy=policy,
        )
        assert resolution.reason == expected
        assert resolution.rotated == (expected is not None)
        events = conversation.collect_events()
        if interaction != "user":
            # Nothing recorded: the generation's freshness is as it was.
            assert resolution.session_id == before
            assert events == []
            continue
        if expected is not None:
            assert resolution.previous_session_id == before != resolution.session_id
            opened_at = now
        last_user = now
        noted = events[-1]
        assert (noted.type, noted.session_id, noted.occurred_at) == (
            "interaction.recorded",
            resolution.session_id,
            now,
        )


@given(st.sampled_from(["heartbeat", "cron", "system"]), st.integers(1, 400 * 86400))
def test_machine_traffic_alone_never_rotates_even_long_expired_sessions(
    interaction: str, advance: int
) -> None:
    # Invariant 11, field failure "heartbeats keeping a session fresh forever", from the other side:
    # the heartbeat does not refresh, and the next user message rotates.
    policy = FreshnessPolicy(mode="idle", idle_minutes=1)
    conversation = Conversation.open("agent:main:main", at=T0, writer="ingress")
    first = conversation.current_session_id
    now = T0 + timedelta(seconds=advance)
    machine = conversation.resolve(now=now, interaction=interaction, policy=policy)  # type: ignore[arg-type]
    assert (machine.session_id, machine.rotated) == (first, False)
    user = conversation.resolve(now=now, interaction="user", policy=policy)
    assert user.rotated == (advance >= 60)
    assert (user.session_id != first) == user.rotated
