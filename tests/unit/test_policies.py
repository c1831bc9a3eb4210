"""The rules the aggregate and the fold share (domain/policies.py), without I/O: each
rule on its own, then the aggregate's decisions and the fold's rows following them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

from sessionledger.domain.conversation import Conversation, Decision
from sessionledger.domain.events import (
    GenerationPruned,
    InteractionRecorded,
    OverridesChangedFact,
    RunEnded,
    RunEndedFact,
    RunErrored,
    RunStarted,
    RunStartedFact,
    TranscriptAppended,
    TranscriptAppendedFact,
    TranscriptEntry,
)
from sessionledger.domain.policies import (
    archive_reason,
    ended_status,
    last_interaction,
    merged_overrides,
    placement,
    resumable,
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


def opened() -> tuple[Conversation, str]:
    conversation = Conversation.open(KEY, at=T0, writer="ingress")
    assert conversation.current_session_id is not None
    return conversation, conversation.current_session_id


def entry(entry_id: str) -> TranscriptEntry:
    return TranscriptEntry(id=entry_id, role="assistant", content={"text": "hi"}, timestamp=T0)


def test_a_deleted_key_archives_late_events_saying_so() -> None:
    conversation, s1 = opened()
    conversation.delete(at=T0)
    late = conversation.record(RunStartedFact(**tags(s1, "e1", run_id="r9", trigger="cron")))
    assert (late.outcome, late.current_session_id, late.reason) == ("archived", None, "deleted")


def test_a_late_event_says_the_key_rotated() -> None:
    conversation, s1 = opened()
    _, s2 = conversation.reset(reason="reset", at=T0)
    late = conversation.record(RunStartedFact(**tags(s1, "e1", run_id="r1", trigger="user")))
    assert (late.outcome, late.current_session_id, late.reason) == ("archived", s2, "rotated")
    current = conversation.record(RunStartedFact(**tags(s2, "e2", run_id="r2", trigger="user")))
    assert (current.outcome, current.reason) == ("applied", None)


ORIGIN = {"originator_id": uuid4(), "originator_version": 1, "timestamp": T0}


def started(sid: str, trigger: str, at: datetime = T0) -> RunStarted:
    return RunStarted(**ORIGIN, **tags(sid, "e1", run_id="r1", trigger=trigger, occurred_at=at))


def appended(sid: str, writer: str, at: datetime = T0, role: str = "user") -> TranscriptAppended:
    item = TranscriptEntry(id="m1", role=role, content="hi", timestamp=T0)  # type: ignore[arg-type]
    fields = tags(sid, "e1", entry=item, writer=writer, occurred_at=at)
    return TranscriptAppended(**ORIGIN, **fields, seq=1, prev_hash="", entry_hash="h")


def test_placement_applies_to_the_current_generation_and_archives_the_rest() -> None:
    event = started("s1", "user")
    assert placement(event, "s1") == "applied"
    assert placement(event, "s2") == "archived"
    assert placement(event, None) == "archived"  # the key was deleted
    pruned = GenerationPruned(
        **ORIGIN, **tags("s1", "e2", writer="system"), entry_count=0, head_hash="", reason="old"
    )
    assert placement(pruned, "s2") == "applied"  # maintenance is about that generation
    assert (archive_reason("s2"), archive_reason(None)) == ("rotated", "deleted")


def test_only_user_interactions_keep_a_generation_fresh() -> None:
    later = T0 + timedelta(minutes=5)
    assert last_interaction(None, appended("s1", "ingress", later)) == later
    assert last_interaction(None, appended("s1", "runner", later)) is None
    assert last_interaction(T0, started("s1", "user", later)) == later
    for trigger in ("cron", "heartbeat", "system"):
        assert last_interaction(T0, started("s1", trigger, later)) == T0
    inbound = InteractionRecorded(
        **ORIGIN, **tags("s1", "e3", writer="ingress", occurred_at=later), interaction="user"
    )
    assert last_interaction(T0, inbound) == later


def test_a_clock_that_went_back_leaves_the_last_interaction_and_it_is_kept_in_utc() -> None:
    later = T0 + timedelta(minutes=5)
    assert last_interaction(later, appended("s1", "ingress", T0)) == later
    elsewhere = (later + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-7)))
    moved = last_interaction(later, appended("s1", "ingress", elsewhere))
    assert moved == elsewhere and moved is not None and moved.tzinfo is UTC


def test_a_generation_becomes_resumable_with_its_first_assistant_entry() -> None:
    assert not resumable(False, "user")
    assert resumable(False, "assistant")
    assert resumable(True, "toolResult")  # and stays so


def test_overrides_merge_and_a_null_removes_one() -> None:
    overrides = {"model": "opus", "thinking": "high"}
    merged = merged_overrides(overrides, {"model": "sonnet", "thinking": None, "voice": "on"})
    assert merged == {"model": "sonnet", "voice": "on"}
    assert overrides == {"model": "opus", "thinking": "high"}  # a new dict: rows are immutable
    assert merged_overrides({}, {"model": None}) == {}


def test_the_aggregate_follows_the_shared_rules() -> None:
    conversation, s1 = opened()
    later = T0 + timedelta(minutes=5)
    conversation.record(
        RunStartedFact(**tags(s1, "e1", run_id="r1", trigger="user", occurred_at=later))
    )
    conversation.record(TranscriptAppendedFact(**tags(s1, "e2", entry=entry("m1"))))
    conversation.record(OverridesChangedFact(**tags(s1, "e3", overrides={"model": "x", "y": None})))
    generation = conversation.generations[s1]
    assert generation.last_interaction_at == later
    assert generation.resumable
    assert generation.overrides == {"model": "x"}


def test_an_ended_run_takes_its_outcome_and_an_errored_one_failed() -> None:
    ended = RunEnded(**ORIGIN, **tags("s1", "e1", run_id="r1", outcome="timeout"))
    errored = RunErrored(**ORIGIN, **tags("s1", "e2", run_id="r1", error="boom"))
    assert (ended_status(ended), ended_status(errored)) == ("timeout", "failed")


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
