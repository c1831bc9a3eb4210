"""The fold over an in-memory RowSet, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.events import RunEndedFact, RunErroredFact, RunStartedFact
from sessionledger.projections.replay import replay

KEY = "agent:main:telegram:direct:4242"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def tags(sid: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "session_key": KEY,
        "session_id": sid,
        "occurred_at": T0,
        "writer": "runner",
        **fields,
    }


def test_status_follows_the_newest_active_run_then_the_last_to_end() -> None:
    conversation = Conversation.open(KEY, at=T0, writer="ingress")
    sid = conversation.current_session_id
    assert sid is not None
    conversation.record(RunStartedFact(**tags(sid, "e1", run_id="a", trigger="user")))
    conversation.record(RunStartedFact(**tags(sid, "e2", run_id="b", trigger="cron")))
    conversation.record(RunEndedFact(**tags(sid, "e3", run_id="b", outcome="done")))
    rows = replay(enumerate(conversation.collect_events(), start=1))  # type: ignore[arg-type]
    generation = rows.generations.rows[sid]
    assert generation is not None
    assert (generation.status, generation.last_run_id, generation.active_run_ids) == (
        "running",
        "a",
        ("a",),
    )
    assert generation.ended_at is None
    conversation.record(
        RunErroredFact(
            **tags(sid, "e4", run_id="a", error="boom", occurred_at=T0 - timedelta(minutes=5))
        )  # skewed clock
    )
    for position, event in enumerate(conversation.collect_events(), start=5):
        rows.apply(event, position)  # type: ignore[arg-type]
    generation = rows.generations.rows[sid]
    assert generation is not None
    assert (generation.status, generation.last_run_id, generation.has_active_run) == (
        "failed",
        "a",
        False,
    )
    # Identity decides: the skewed end is clamped to the start, runtime never negative.
    assert generation.ended_at == generation.started_at and generation.runtime_ms == 0


def test_archived_events_leave_the_session_pointer_alone() -> None:
    conversation = Conversation.open(KEY, at=T0, writer="ingress")
    s1 = conversation.current_session_id
    assert s1 is not None
    conversation.record(RunStartedFact(**tags(s1, "e1", run_id="a", trigger="user")))
    _, s2 = conversation.reset(reason="reset", at=T0)
    events = conversation.collect_events()
    rows = replay(enumerate(events, start=1))  # type: ignore[arg-type]
    pointer = rows.sessions.rows[KEY]
    conversation.record(RunEndedFact(**tags(s1, "e2", run_id="a", outcome="done")))
    (late,) = conversation.collect_events()
    transition = rows.apply(late, len(events) + 1)  # type: ignore[arg-type]
    assert transition.effect.kind == "archived" and transition.session is None
    assert rows.sessions.rows[KEY] == pointer and pointer is not None
    assert pointer.session_id == s2
    archived = rows.generations.rows[s1]
    assert archived is not None and (archived.status, archived.late_events) == ("done", 1)
    current = rows.generations.rows[s2]
    assert current is not None and current.status == "new"
