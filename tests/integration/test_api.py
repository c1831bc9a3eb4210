"""The Python API against real databases: each field failure of docs/invariants.md as an example."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionledger.domain.errors import InvalidEvent, SessionChanged, SessionDeleted, UnknownSession
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.infrastructure.ledger import Ledger
from tests.helpers import assert_replay_equals_live

KEY = "agent:main:telegram:direct:4242"
OTHER = "agent:ops:slack:channel:c01"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
_ids = itertools.count()


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def event(
    kind: str, session_id: str, *, key: str = KEY, t: float = 1, **fields: Any
) -> dict[str, Any]:
    return {
        "type": kind,
        "eventId": f"e{next(_ids)}",
        "sessionKey": key,
        "sessionId": session_id,
        "occurredAt": at(t),
        "writer": fields.pop("writer", "runner"),
        **fields,
    }


def start(sid: str, run: str, t: float = 1, **kw: Any) -> dict[str, Any]:
    return event("run.started", sid, runId=run, trigger=kw.pop("trigger", "user"), t=t, **kw)


def end(sid: str, run: str, t: float = 2, **kw: Any) -> dict[str, Any]:
    return event("run.ended", sid, runId=run, outcome=kw.pop("outcome", "done"), t=t, **kw)


def entry(
    sid: str, entry_id: str, role: str = "user", parent: str | None = None, **kw: Any
) -> dict[str, Any]:
    body = {
        "id": entry_id,
        "parentId": parent,
        "role": role,
        "content": kw.pop("content", entry_id),
        "timestamp": at(kw.pop("t", 1)),
    }
    return event("transcript.appended", sid, entry=body, **kw)


def open_key(ledger: Ledger, key: str = KEY) -> str:
    return ledger.resolve(key, at=T0).session.session_id


def test_reset_and_delete_compare_and_swap(ledger: Ledger) -> None:
    s1 = open_key(ledger)
    with pytest.raises(SessionChanged) as raised:
        ledger.reset(KEY, expected_session_id="stale")
    assert raised.value.current_session_id == s1
    with pytest.raises(SessionChanged):
        ledger.delete(KEY, expected_session_id="stale")
    assert ledger.session(KEY).session_id == s1  # neither a silent success nor a change
    with pytest.raises(UnknownSession):
        ledger.reset("agent:main:nobody")
    reset = ledger.reset(KEY, expected_session_id=s1, session_id="s2")
    assert (reset.previous_session_id, reset.session_id) == (s1, "s2")
    with pytest.raises(InvalidEvent):
        ledger.reset(KEY, session_id=s1)  # sessionIds are never reused


def test_a_deleted_session_is_not_resurrected_by_late_writers(ledger: Ledger) -> None:
    s1 = open_key(ledger)
    ledger.record([start(s1, "r1")])
    assert ledger.delete(KEY, expected_session_id=s1) == s1
    late = ledger.record([end(s1, "r1"), entry(s1, "m1", writer="heartbeat")])
    assert [(r.outcome, r.reason) for r in late] == [("archived", "deleted")] * 2
    assert all(r.current_session_id is None for r in late)
    with pytest.raises(SessionDeleted):
        ledger.session(KEY)
    assert ledger.sessions().items == []
    with pytest.raises(SessionDeleted):
        ledger.resolve(KEY, interaction="heartbeat")
    generation = ledger.generation(s1)
    assert generation is not None and (generation.state, generation.status) == ("deleted", "done")
    # A user writing again starts a new conversation: explicit, not a resurrection.
    again = ledger.resolve(KEY)
    assert again.session.session_id != s1 and again.session.previous_session_id is None
    assert_replay_equals_live(ledger)


def test_idle_rollover_keeps_bindings_overrides_and_history(ledger: Ledger) -> None:
    idle = FreshnessPolicy(mode="idle", idle_minutes=30)
    s1 = ledger.resolve(KEY, at=T0, policy=idle).session.session_id
    ledger.set_binding(KEY, "claude-cli", "cli-123")
    ledger.record([event("overrides.changed", s1, overrides={"model": "opus"}, writer="admin")])
    ledger.record([entry(s1, "m1"), entry(s1, "m2", role="assistant", parent="m1")])

    fresh = ledger.resolve(KEY, at=T0 + timedelta(minutes=29), policy=idle)
    assert not fresh.rotated
    rolled = ledger.resolve(KEY, at=T0 + timedelta(minutes=29 + 31), policy=idle)
    assert (rolled.rotated, rolled.reason, rolled.previous_session_id) == (True, "idle", s1)
    row = rolled.session
    assert row.previous_session_id == s1
    assert row.bindings == {"claude-cli": "cli-123"}
    assert row.overrides == {"model": "opus"}
    s2 = row.session_id
    ledger.record([entry(s2, "m3")])
    history = ledger.transcript(KEY, lineage=True)
    assert [(e.session_id, e.entry_id) for e in history] == [(s1, "m1"), (s1, "m2"), (s2, "m3")]
    assert [e.entry_id for e in ledger.transcript(KEY)] == ["m3"]


def test_hard_reset_carries_only_the_lineage_link(ledger: Ledger) -> None:
    s1 = open_key(ledger)
    ledger.set_binding(KEY, "claude-cli", "cli-123")
    ledger.record([event("overrides.changed", s1, overrides={"model": "opus"}, writer="admin")])
    row = ledger.reset(KEY, reason="reset").session
    assert (row.previous_session_id, row.bindings, row.overrides) == (s1, {}, {})


def test_heartbeats_neither_refresh_nor_rotate(ledger: Ledger) -> None:
    idle = FreshnessPolicy(mode="idle", idle_minutes=30)
    s1 = ledger.resolve(KEY, at=T0, policy=idle).session.session_id
    for minutes in (20, 40, 60, 120):
        beat = ledger.resolve(
            KEY, at=T0 + timedelta(minutes=minutes), interaction="heartbeat", policy=idle
        )
        assert not beat.rotated and beat.session.session_id == s1
    ledger.record([entry(s1, "hb", writer="heartbeat", t=3600)])
    assert ledger.session(KEY).last_interaction_at == T0
    # The first user message after the idle window rotates, measured from the last user turn.
    user = ledger.resolve(KEY, at=T0 + timedelta(minutes=121), policy=idle)
    assert user.rotated and user.reason == "idle"


def test_daily_expiry_counts_from_generation_start(ledger: Ledger) -> None:
    daily = FreshnessPolicy(mode="daily", at_hour=4, timezone="Europe/Berlin")
    start_at = datetime(2026, 11, 21, 2, 30, tzinfo=UTC)  # 03:30 in Berlin
    s1 = ledger.resolve(KEY, at=start_at, policy=daily).session.session_id
    assert not ledger.resolve(KEY, at=start_at + timedelta(minutes=20), policy=daily).rotated
    crossed = ledger.resolve(KEY, at=start_at + timedelta(minutes=40), policy=daily)  # 04:10
    assert crossed.rotated and crossed.reason == "daily" and crossed.previous_session_id == s1


def test_resumable_only_once_an_assistant_entry_exists(ledger: Ledger) -> None:
    sid = open_key(ledger)
    ledger.record([start(sid, "cron-1", trigger="cron"), entry(sid, "b1", role="bashExecution")])
    ledger.record([end(sid, "cron-1")])
    assert not ledger.session(KEY).resumable
    ledger.record([entry(sid, "a1", role="assistant", parent="b1")])
    assert ledger.session(KEY).resumable


def test_overlapping_runs_keep_status_and_end_time_consistent(ledger: Ledger) -> None:
    sid = open_key(ledger)
    ledger.record([start(sid, "r1", t=1), start(sid, "r2", t=2)])
    ledger.record([end(sid, "r2", t=3)])
    row = ledger.session(KEY)
    assert (row.status, row.active_run_ids, row.last_run_id, row.ended_at) == (
        "running",
        ("r1",),
        "r1",
        None,
    )
    ledger.record(
        [
            event(
                "run.errored",
                sid,
                runId="r1",
                error="boom",
                t=5,
                usage={"input": 10, "output": 5, "cacheRead": 1, "cacheWrite": 2},
            )
        ]
    )
    row = ledger.session(KEY)
    assert (row.status, row.has_active_run, row.last_run_id, row.last_error) == (
        "failed",
        False,
        "r1",
        "boom",
    )
    assert row.ended_at is not None and row.started_at is not None
    assert row.runtime_ms == 4000 == (row.ended_at - row.started_at) // timedelta(milliseconds=1)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_write_tokens) == (
        10,
        5,
        1,
        2,
    )


def test_a_terminal_event_with_a_skewed_clock_is_accepted(ledger: Ledger) -> None:
    sid = open_key(ledger)
    ledger.record([start(sid, "r1", t=100)])
    (ended,) = ledger.record([end(sid, "r1", t=5)])  # the reporter's clock is behind
    assert ended.outcome == "applied"
    row = ledger.session(KEY)
    assert (row.status, row.runtime_ms, row.ended_at == row.started_at) == ("done", 0, True)


def test_retried_appends_are_not_duplicated(ledger: Ledger) -> None:
    sid = open_key(ledger)
    first = entry(sid, "m1")
    (recorded,) = ledger.record([first])
    (retry,) = ledger.record([first])
    (resent,) = ledger.record([{**first, "eventId": "resent-under-new-id"}])
    assert (retry.outcome, retry.position) == (recorded.outcome, recorded.position)
    assert resent.outcome == "duplicate" and resent.position is None
    assert ledger.session(KEY).entry_count == 1


def test_the_events_of_one_call_share_their_recorded_moment(ledger: Ledger) -> None:
    sid = open_key(ledger)
    batch = ledger.record([start(sid, "r1"), entry(sid, "m1"), entry(sid, "m2", parent="m1")])
    (later,) = ledger.record([end(sid, "r1")])
    recorded = {e.position: e.recorded_at for e in ledger.audit(KEY).entries}
    assert len({recorded[r.position] for r in batch}) == 1  # type: ignore[index]
    assert recorded[later.position] > recorded[batch[0].position]  # type: ignore[index]


def test_run_ids_belong_to_one_session(ledger: Ledger) -> None:
    s1, s2 = open_key(ledger), open_key(ledger, OTHER)
    ledger.record([start(s1, "shared")])
    (clash,) = ledger.record([start(s2, "shared", key=OTHER)])
    assert clash.outcome == "rejected" and (clash.reason or "").startswith("runId:")
    (again,) = ledger.record([start(s1, "shared")])
    assert again.outcome == "rejected"


def test_co_tenants_append_to_a_live_session(ledger: Ledger) -> None:
    sid = open_key(ledger)
    results = ledger.record(
        [start(sid, "r1")]
        + [entry(sid, f"{w}-1", writer=w) for w in ("heartbeat", "cron", "ingress", "runner")]
    )
    assert {r.outcome for r in results} == {"applied"}


def test_bindings_can_be_dropped_only_when_present(ledger: Ledger) -> None:
    open_key(ledger)
    with pytest.raises(InvalidEvent) as raised:
        ledger.drop_binding(KEY, "claude-cli", reason="missing-transcript")
    assert raised.value.field == "provider"
    ledger.set_binding(KEY, "claude-cli", "cli-1")
    ledger.drop_binding(KEY, "claude-cli", reason="missing-transcript")
    assert ledger.session(KEY).bindings == {}


def test_listing_filters_and_pages(ledger: Ledger) -> None:
    keys = [f"agent:main:telegram:direct:{i:03}" for i in range(5)] + [OTHER]
    sids = {key: open_key(ledger, key) for key in keys}
    ledger.record([start(sids[keys[1]], "r1", key=keys[1])])
    assert [v.session_key for v in ledger.sessions(status="running").items] == [keys[1]]
    assert [v.session_key for v in ledger.sessions(agent="ops").items] == [OTHER]
    assert len(ledger.sessions(channel="telegram").items) == 5
    seen: list[str] = []
    cursor = None
    while True:
        page = ledger.sessions(limit=2, cursor=cursor)
        seen += [v.session_key for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(keys)


def test_rebuild_gives_identical_rows(ledger: Ledger) -> None:
    sid = open_key(ledger)
    ledger.record([start(sid, "r1"), entry(sid, "m1"), end(sid, "r1")])
    ledger.reset(KEY)
    before = ledger.session(KEY)
    ledger.rebuild()
    assert ledger.session(KEY) == before
    assert_replay_equals_live(ledger)


def test_generations_are_listed_in_lineage_order_whatever_touched_them_last(
    ledger: Ledger,
) -> None:
    s1 = open_key(ledger)
    ledger.record([start(s1, "r1")])
    s2 = ledger.reset(KEY).session_id
    s3 = ledger.reset(KEY).session_id
    ledger.record([end(s1, "r1")])  # a late event touches the oldest generation last
    assert [g.session_id for g in ledger.generations(KEY)] == [s1, s2, s3]


def test_commands_name_bad_fields_instead_of_failing(ledger: Ledger) -> None:
    open_key(ledger)
    with pytest.raises(InvalidEvent) as raised:
        ledger.set_binding(KEY, "claude\x00cli", "cli-1")
    assert raised.value.field == "provider"
    with pytest.raises(InvalidEvent) as raised:
        ledger.status_report(stuck_after_minutes=10**12)
    assert raised.value.field == "stuckAfterMinutes"


def test_huge_integers_in_entry_content_survive_the_log_and_the_rows(ledger: Ledger) -> None:
    sid = open_key(ledger)
    content = {"big": 2**70, "negative": -(2**65), "small": 7, "digits": "1" * 30}
    ledger.record([entry(sid, "m1", content=content)])
    (stored,) = ledger.transcript(KEY)
    assert stored.content == content
    assert isinstance(stored.content["big"], int)
    assert_replay_equals_live(ledger)


# Any JSON value, bare numbers included: SQLite's JSON columns have numeric affinity.
json_content = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.integers(2**63, 2**80)  # beyond 64 bits, where SQLite's affinity loses digits
    | st.integers(-(2**80), -(2**63) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def test_entry_content_reads_back_exactly_as_it_was_sent(ledger: Ledger) -> None:
    sid = open_key(ledger)
    sent: list[Any] = []

    @settings(max_examples=60, deadline=None)
    @given(content=json_content)
    def append(content: Any) -> None:
        ledger.record([entry(sid, f"m{len(sent)}", content=content)])
        sent.append(content)
        stored = ledger.transcript(KEY)[-1].content
        assert stored == content and type(stored) is type(content)

    append()
    assert [row.content for row in ledger.transcript(KEY)] == sent
    assert_replay_equals_live(ledger)
