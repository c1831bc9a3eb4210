"""The Conversation aggregate's snapshots, without I/O (its rules: test_conversation_rules)."""

from __future__ import annotations

import copy

import pytest

from sessionledger.domain.conversation import REMEMBERED_DIGITS, Conversation
from tests.helpers import KEY, T0, Facts


@pytest.mark.parametrize("whole_digests", [False, True], ids=["snapshot", "older snapshot"])
def test_a_generation_loaded_from_a_snapshot_still_tells_retries_from_conflicts(
    whole_digests: bool,
) -> None:
    """Invariant 4, exactly once, and invariant 12, transcript integrity
    (docs/invariants.md), across a snapshot: generations remember a prefix of each
    entry's digest (their snapshots' bulk); snapshots taken before that hold whole
    digests and load as the prefix."""
    conversation = Conversation.open(KEY, at=T0, writer="ingress", session_id="s1")
    facts = Facts()
    first = facts.appended("s1", "m1")
    conversation.record(first)
    snapshot = conversation.take_snapshot()
    assert snapshot.state["generations"]["s1"]["entries"] == {
        "m1": first.entry.digest()[:REMEMBERED_DIGITS]
    }
    if whole_digests:
        state = copy.deepcopy(snapshot.state)
        state["generations"]["s1"]["entries"]["m1"] = first.entry.digest()
        snapshot = snapshot.model_copy(update={"state": state})
    loaded = Conversation.from_snapshot(snapshot)
    assert loaded.to_state() == conversation.to_state()
    assert loaded.version == conversation.version == 2
    assert loaded.record(facts.appended("s1", "m1")).outcome == "duplicate"
    assert loaded.record(facts.appended("s1", "m1", text="other")).outcome == "rejected"
    assert loaded.record(facts.appended("s1", "m2", parent="m1")).outcome == "applied"
