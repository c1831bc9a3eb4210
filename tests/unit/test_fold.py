"""The fold over an in-memory RowSet, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sessionledger.domain.conversation import Conversation, Decision
from sessionledger.domain.events import (
    OverridesChangedFact,
    RunEndedFact,
    RunErroredFact,
    RunStartedFact,
    TranscriptAppendedFact,
    TranscriptEntry,
)
from sessionledger.projections.replay import replay
from sessionledger.projections.state import RowSet

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


def test_the_fold_places_each_event_where_the_aggregate_decided() -> None:
    """What the aggregate answered is what the fold's receipts say, through a rotation
    and a deletion: both follow domain/policies.py `placement`, nothing cross-checks."""
    conversation = Conversation.open(KEY, at=T0, writer="ingress")
    s1 = conversation.current_session_id
    assert s1 is not None
    rows = RowSet()
    log: list[Any] = []
    answered: dict[str, Decision] = {}

    def record(fact: Any) -> None:
        answered[fact.event_id] = conversation.record(fact)

    def fold() -> None:
        for event in conversation.collect_events():
            log.append(event)
            rows.apply(event, len(log))

    record(RunStartedFact(**tags(s1, "e1", run_id="a", trigger="user")))
    fold()
    _, s2 = conversation.reset(reason="reset", at=T0)
    fold()
    record(RunEndedFact(**tags(s1, "e2", run_id="a", outcome="done")))  # late: rotated
    record(RunStartedFact(**tags(s2, "e3", run_id="b", trigger="user")))
    fold()
    conversation.delete(at=T0)
    fold()
    record(RunEndedFact(**tags(s2, "e4", run_id="b", outcome="done")))  # late: deleted
    fold()
    receipts = {r.event_id: r for r in rows.receipts}
    assert [answered[e].outcome for e in ("e1", "e2", "e3", "e4")] == [
        "applied",
        "archived",
        "applied",
        "archived",
    ]
    for event_id, decision in answered.items():
        receipt = receipts[event_id]
        assert (receipt.outcome, receipt.current_session_id) == (
            decision.outcome,
            decision.current_session_id,
        )
    assert (answered["e2"].reason, answered["e4"].reason) == ("rotated", "deleted")
    late = [rows.generations.rows[sid] for sid in (s1, s2)]
    assert [g.late_events for g in late if g is not None] == [1, 1]
    assert rows.runs.rows["a"] is not None and rows.runs.rows["a"].late


def test_the_rows_follow_the_rules_the_aggregate_follows() -> None:
    """Freshness, resumable and overrides: the generation row after a fold of the log
    says what the aggregate holds (both apply domain/policies.py)."""
    conversation = Conversation.open(KEY, at=T0, writer="ingress")
    sid = conversation.current_session_id
    assert sid is not None
    later = T0 + timedelta(minutes=7)

    def appended(event_id: str, role: str, writer: str, at: datetime) -> TranscriptAppendedFact:
        item = TranscriptEntry(id=event_id, role=role, content="x", timestamp=T0)  # type: ignore[arg-type]
        return TranscriptAppendedFact(
            **tags(sid, event_id, entry=item, writer=writer, occurred_at=at)
        )

    conversation.record(appended("m1", "user", "ingress", later))
    conversation.record(appended("m2", "assistant", "runner", later + timedelta(minutes=1)))
    conversation.record(
        RunStartedFact(
            **tags(sid, "r", run_id="a", trigger="cron", occurred_at=later + timedelta(hours=1))
        )
    )
    conversation.record(OverridesChangedFact(**tags(sid, "o1", overrides={"model": "x", "t": 1})))
    conversation.record(OverridesChangedFact(**tags(sid, "o2", overrides={"t": None})))
    rows = replay(enumerate(conversation.collect_events(), start=1))  # type: ignore[arg-type]
    row = rows.generations.rows[sid]
    generation = conversation.generations[sid]
    assert row is not None
    assert (row.last_interaction_at, row.resumable, row.overrides) == (
        generation.last_interaction_at,
        generation.resumable,
        generation.overrides,
    )
    assert (row.last_interaction_at, row.resumable, row.overrides) == (later, True, {"model": "x"})
