"""The Conversation aggregate's decisions, without I/O."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest

from sessionledger.domain.conversation import REMEMBERED_DIGITS, Conversation, evolve
from sessionledger.domain.errors import SessionChanged, SessionDeleted
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
    FreshnessPolicy,
    archive_reason,
    ended_status,
    last_interaction,
    merged_overrides,
    placement,
    resumable,
)

KEY = "agent:main:telegram:direct:4242"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def opened() -> tuple[Conversation, str]:
    conversation = Conversation.open(KEY, at=T0, writer="ingress")
    assert conversation.current_session_id is not None
    return conversation, conversation.current_session_id


def tags(sid: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "session_key": KEY,
        "session_id": sid,
        "occurred_at": T0,
        "writer": "runner",
        **fields,
    }


def entry(entry_id: str, parent: str | None = None, text: str = "hi") -> TranscriptEntry:
    return TranscriptEntry(
        id=entry_id, parent_id=parent, role="assistant", content={"text": text}, timestamp=T0
    )


def test_late_end_of_a_rotated_generation_is_archived_not_rejected() -> None:
    conversation, s1 = opened()
    conversation.record(RunStartedFact(**tags(s1, "e1", run_id="r1", trigger="user")))
    _, s2 = conversation.reset(reason="reset", at=T0)
    late = RunEndedFact(
        **tags(s1, "e2", run_id="r1", outcome="done", occurred_at=T0 - timedelta(hours=3))
    )
    decision = conversation.record(late)
    assert (decision.outcome, decision.current_session_id) == ("archived", s2)
    assert conversation.generations[s1].runs["r1"] == "done"


def test_run_end_under_another_generation_is_rejected() -> None:
    conversation, s1 = opened()
    conversation.record(RunStartedFact(**tags(s1, "e1", run_id="r1", trigger="user")))
    _, s2 = conversation.reset(reason="reset", at=T0)
    decision = conversation.record(RunEndedFact(**tags(s2, "e2", run_id="r1", outcome="done")))
    assert decision.outcome == "rejected" and "belongs to generation" in (decision.reason or "")


def test_reset_and_delete_compare_and_swap() -> None:
    conversation, s1 = opened()
    with pytest.raises(SessionChanged) as raised:
        conversation.reset(reason="reset", at=T0, expected_session_id="other")
    assert raised.value.current_session_id == s1
    with pytest.raises(SessionChanged):
        conversation.delete(at=T0, expected_session_id="other")
    assert conversation.collect_events()[-1].type == "generation.opened"  # nothing new
    assert conversation.delete(at=T0, expected_session_id=s1) == s1
    with pytest.raises(SessionDeleted):
        conversation.reset(reason="reset", at=T0)


def test_machine_resolve_on_a_deleted_key_does_not_resurrect_it() -> None:
    conversation, s1 = opened()
    conversation.delete(at=T0)
    with pytest.raises(SessionDeleted):
        conversation.resolve(now=T0, interaction="heartbeat", policy=FreshnessPolicy())
    late = conversation.record(RunStartedFact(**tags(s1, "e1", run_id="r9", trigger="cron")))
    assert (late.outcome, conversation.current_session_id) == ("archived", None)
    assert late.reason == "deleted"


def test_a_late_event_says_the_key_rotated() -> None:
    conversation, s1 = opened()
    _, s2 = conversation.reset(reason="reset", at=T0)
    late = conversation.record(RunStartedFact(**tags(s1, "e1", run_id="r1", trigger="user")))
    assert (late.outcome, late.current_session_id, late.reason) == ("archived", s2, "rotated")
    current = conversation.record(RunStartedFact(**tags(s2, "e2", run_id="r2", trigger="user")))
    assert (current.outcome, current.reason) == ("applied", None)


def test_idle_rollover_carries_bindings_and_overrides_hard_reset_does_not() -> None:
    conversation, s1 = opened()
    generation = conversation.generations[s1]
    generation.bindings["claude-cli"] = "abc"
    generation.overrides["model"] = "gpt-5"
    _, s2 = conversation.reset(reason="idle", at=T0)
    assert conversation.generations[s2].bindings == {"claude-cli": "abc"}
    assert conversation.generations[s2].overrides == {"model": "gpt-5"}
    assert conversation.generations[s2].previous_session_id == s1
    _, s3 = conversation.reset(reason="daily", at=T0)
    assert conversation.generations[s3].bindings == {} == conversation.generations[s3].overrides
    assert conversation.generations[s3].previous_session_id == s2


def test_transcript_duplicates_conflicts_and_parents() -> None:
    conversation, s1 = opened()
    append = lambda eid, e: conversation.record(  # noqa: E731
        TranscriptAppendedFact(**tags(s1, eid, entry=e))
    )
    assert append("e1", entry("m1")).outcome == "applied"
    assert append("e2", entry("m1")).outcome == "duplicate"
    assert append("e3", entry("m1", text="other")).outcome == "rejected"
    assert append("e4", entry("m2", parent="nope")).outcome == "rejected"
    assert append("e5", entry("m2", parent="m1")).outcome == "applied"
    assert conversation.generations[s1].resumable  # an assistant entry exists (§4.9)
    events = conversation.collect_events()
    assert [e.type for e in events].count("transcript.appended") == 2


@pytest.mark.parametrize("whole_digests", [False, True], ids=["snapshot", "older snapshot"])
def test_a_generation_loaded_from_a_snapshot_still_tells_retries_from_conflicts(
    whole_digests: bool,
) -> None:
    """Generations remember a prefix of each entry's digest (their snapshots' bulk);
    snapshots taken before that hold whole digests and load as the prefix."""
    conversation, s1 = opened()
    first = entry("m1")
    conversation.record(TranscriptAppendedFact(**tags(s1, "e1", entry=first)))
    snapshot = conversation.take_snapshot()
    assert snapshot.state["generations"][s1]["entries"] == {
        "m1": first.digest()[:REMEMBERED_DIGITS]
    }
    if whole_digests:
        state = copy.deepcopy(snapshot.state)
        state["generations"][s1]["entries"]["m1"] = first.digest()
        snapshot = snapshot.model_copy(update={"state": state})
    loaded = Conversation.from_snapshot(snapshot)
    assert loaded.to_state() == conversation.to_state()
    append = lambda eid, e: loaded.record(  # noqa: E731
        TranscriptAppendedFact(**tags(s1, eid, entry=e))
    )
    assert append("e2", entry("m1")).outcome == "duplicate"
    assert append("e3", entry("m1", text="other")).outcome == "rejected"
    assert append("e4", entry("m2", parent="m1")).outcome == "applied"


def test_the_aggregate_rebuilds_from_its_events() -> None:
    conversation, s1 = opened()
    conversation.record(RunStartedFact(**tags(s1, "e1", run_id="r1", trigger="user")))
    conversation.reset(reason="idle", at=T0)
    events = conversation.collect_events()
    rebuilt = None
    for event in events:
        rebuilt = evolve(rebuilt, event)  # type: ignore[arg-type]
    assert rebuilt is not None and rebuilt.to_state() == conversation.to_state()
    snapshot = Conversation.from_snapshot(conversation.take_snapshot())
    assert snapshot.to_state() == conversation.to_state()


# -- the rules the aggregate and the fold share (domain/policies.py) -----------------------

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
