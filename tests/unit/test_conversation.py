"""The Conversation aggregate's decisions, without I/O."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sessionledger.domain.conversation import REMEMBERED_DIGITS, Conversation, evolve
from sessionledger.domain.errors import SessionChanged, SessionDeleted
from sessionledger.domain.events import (
    RunEndedFact,
    RunStartedFact,
    TranscriptAppendedFact,
    TranscriptEntry,
)
from sessionledger.domain.policies import FreshnessPolicy

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
