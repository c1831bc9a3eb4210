"""Every rule of the Conversation aggregate, through its public commands, without I/O.

Each test names the invariant of docs/invariants.md it holds the aggregate to, and looks
only at what the commands answer (Decision, Resolution, errors) and at the events they
record (`collect_events`), never at how the aggregate keeps its state.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionledger.domain.conversation import Conversation, Decision, project_conversation
from sessionledger.domain.errors import InvalidEvent, SessionChanged, SessionDeleted
from sessionledger.domain.events import (
    GENESIS_HASH,
    Fact,
    GenerationOpened,
    GenerationOpenedFact,
    LedgerEvent,
    SessionRotated,
    TranscriptAppended,
    chain_hash,
)
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.domain.values import Interaction, ResetReason
from tests.helpers import KEY, T0, TRAFFIC, Facts, Traffic

HOUR = timedelta(hours=1)
MACHINE: tuple[Interaction, ...] = ("heartbeat", "cron", "system")
HARD: tuple[ResetReason, ...] = ("new", "reset", "daily", "admin")


def opened() -> tuple[Conversation, str, Facts]:
    """A key's aggregate with its first generation open, and nothing pending."""
    conversation = Conversation.open(KEY, at=T0, writer="ingress")
    (event,) = conversation.collect_events()
    return conversation, event.session_id, Facts()


def rotated(reason: ResetReason = "reset") -> tuple[Conversation, str, str, Facts]:
    conversation, s1, facts = opened()
    previous, s2 = conversation.reset(reason=reason, at=T0)
    assert previous == s1
    conversation.collect_events()
    return conversation, s1, s2, facts


def outcome(decision: Decision) -> tuple[str, str | None, str | None]:
    return decision.outcome, decision.session_id, decision.current_session_id


def rejected_field(decision: Decision) -> str:
    """The field a rejection names (its reason reads "<field>: <why>")."""
    assert decision.outcome == "rejected", decision
    assert decision.reason is not None
    return decision.reason.partition(": ")[0]


def late_facts(facts: Facts, sid: str) -> list[Fact]:
    """One of each fact a reporter may send, all about generation `sid` (the run r1
    and the binding of provider "cli" exist there)."""
    return [
        facts.ended(sid, "r1"),
        facts.started(sid, "r2"),
        facts.appended(sid, "m1"),
        facts.bound(sid, "other", "c2"),
        facts.unbound(sid, "cli"),
        facts.overridden(sid, model="gpt-5"),
    ]


# -- what any fact must name -----------------------------------------------------------------


def test_a_fact_for_a_generation_the_key_never_had_is_rejected_and_records_nothing() -> None:
    conversation, s1, facts = opened()
    decision = conversation.record(facts.started("not-a-generation", "r1"))
    assert outcome(decision) == ("rejected", "not-a-generation", s1)
    assert rejected_field(decision) == "sessionId"
    assert conversation.collect_events() == []


def test_a_fact_only_commands_may_record_is_rejected_in_a_batch() -> None:
    conversation, s1, facts = opened()
    fact = GenerationOpenedFact(**facts.tags(s1))
    assert rejected_field(conversation.record(fact)) == "type"
    assert conversation.collect_events() == []


def test_accepted_facts_are_stamped_with_the_recording_moment() -> None:
    conversation, s1, facts = opened()
    moment = T0 + 5 * HOUR
    conversation.record(facts.started(s1, "r1"), moment)
    conversation.record(facts.appended(s1, "m1"), moment)
    events = conversation.collect_events()
    assert [e.recorded_at for e in events] == [moment, moment]
    assert [e.occurred_at for e in events] == [T0, T0]  # the reporter's clock stays as told


# -- invariant 1: the generation fence --------------------------------------------------------


@pytest.mark.parametrize(
    "index", range(6), ids=lambda i: ["end", "start", "append", "bind", "unbind", "overrides"][i]
)
def test_a_late_fact_for_a_rotated_generation_is_archived_against_its_own_generation(
    index: int,
) -> None:
    """Invariant 1, generation fence (docs/invariants.md): a fact tagged with a rotated
    generation is recorded against that generation and answered "archived" with the
    current sessionId; it is never applied to the current generation."""
    conversation, s1, facts = opened()
    conversation.record(facts.started(s1, "r1"))
    conversation.record(facts.bound(s1, "cli", "c1"))
    _, s2 = conversation.reset(reason="reset", at=T0)
    conversation.collect_events()
    fact = late_facts(facts, s1)[index]
    assert outcome(conversation.record(fact)) == ("archived", s1, s2)
    (event,) = conversation.collect_events()
    assert (event.type, event.session_id, event.event_id) == (fact.type, s1, fact.event_id)
    # The current generation was not touched: the same fact for it is decided afresh.
    assert conversation.record(late_facts(facts, s2)[index]).outcome != "archived"


def test_the_same_facts_for_the_current_generation_are_applied() -> None:
    """Invariant 1, generation fence (docs/invariants.md): "archived" is only for
    generations that are no longer current."""
    conversation, s1, facts = opened()
    conversation.record(facts.started(s1, "r1"))
    conversation.record(facts.bound(s1, "cli", "c1"))
    for fact in late_facts(facts, s1):
        assert outcome(conversation.record(fact)) == ("applied", s1, s1), fact.type


@settings(max_examples=50)
@given(skew=st.integers(-400 * 24 * 3600, 400 * 24 * 3600), errored=st.booleans())
def test_identity_decides_a_runs_end_never_its_clock(skew: int, errored: bool) -> None:
    """Invariant 1, generation fence (docs/invariants.md): a run's own terminal event is
    accepted whatever its timestamp says, on the current and on an archived generation."""
    conversation, s1, facts = opened()
    conversation.record(facts.started(s1, "r1"))
    conversation.record(facts.started(s1, "r2"))
    at = T0 + timedelta(seconds=skew)
    finish = facts.errored if errored else facts.ended
    assert conversation.record(finish(s1, "r1", at=at)).outcome == "applied"
    _, s2 = conversation.reset(reason="reset", at=T0)
    assert outcome(conversation.record(finish(s1, "r2", at=at))) == ("archived", s1, s2)


def test_a_runs_end_tagged_with_another_generation_is_rejected() -> None:
    """Invariant 1, generation fence (docs/invariants.md): a run belongs to the generation
    it started in; an end tagged with another one (even the current) changes nothing."""
    conversation, s1, s2, facts = rotated()
    conversation.record(facts.started(s1, "r1"))
    for fact in (facts.ended(s2, "r1"), facts.errored(s2, "r1")):
        decision = conversation.record(fact)
        assert rejected_field(decision) == "sessionId" and decision.current_session_id == s2
    conversation.collect_events()
    assert conversation.record(facts.ended(s1, "r1")).outcome == "archived"  # still running


# -- invariant 2: no impossible rows (a run starts once and ends once) ----------------------


def test_a_run_ends_at_most_once() -> None:
    """Invariant 2, no impossible rows (docs/invariants.md): a run that ended cannot end
    or error again, so its row has one terminal status and one end."""
    conversation, s1, facts = opened()
    conversation.record(facts.started(s1, "r1"))
    assert conversation.record(facts.ended(s1, "r1", outcome="killed")).outcome == "applied"
    for fact in (facts.ended(s1, "r1"), facts.errored(s1, "r1")):
        decision = conversation.record(fact)
        assert rejected_field(decision) == "runId" and "already ended" in (decision.reason or "")
    assert len(conversation.collect_events()) == 2


def test_a_run_that_never_started_cannot_end() -> None:
    """Invariant 2, no impossible rows (docs/invariants.md): no terminal row without a start."""
    conversation, s1, facts = opened()
    for fact in (facts.ended(s1, "ghost"), facts.errored(s1, "ghost")):
        assert rejected_field(conversation.record(fact)) == "runId"
    assert conversation.collect_events() == []


def test_a_run_id_starts_once_across_the_whole_lineage() -> None:
    """Invariant 2, no impossible rows (docs/invariants.md), and invariant 4, exactly once:
    a second start of a runId, in the same or a later generation, is rejected."""
    conversation, s1, facts = opened()
    assert conversation.record(facts.started(s1, "r1")).outcome == "applied"
    assert rejected_field(conversation.record(facts.started(s1, "r1"))) == "runId"
    _, s2 = conversation.reset(reason="reset", at=T0)
    conversation.collect_events()
    assert rejected_field(conversation.record(facts.started(s2, "r1"))) == "runId"
    assert conversation.collect_events() == []


# -- invariant 4: exactly once (duplicates the aggregate recognises) -----------------------


def test_a_retried_append_under_a_new_event_id_is_a_duplicate_that_records_nothing() -> None:
    """Invariant 4, exactly once (docs/invariants.md): the same entry appended again (a
    retry that lost its eventId) is answered "duplicate" and logs no second event."""
    conversation, s1, facts = opened()
    assert conversation.record(facts.appended(s1, "m1")).outcome == "applied"
    conversation.collect_events()
    retry = conversation.record(facts.appended(s1, "m1"))
    assert outcome(retry) == ("duplicate", s1, s1)
    assert conversation.collect_events() == []
    # And the chain goes on from the first copy: the next entry is the second, not third.
    conversation.record(facts.appended(s1, "m2", parent="m1"))
    (event,) = conversation.collect_events()
    assert isinstance(event, TranscriptAppended) and event.seq == 2


def test_a_retried_append_on_an_archived_generation_is_a_duplicate_too() -> None:
    """Invariant 4, exactly once (docs/invariants.md), on a rotated generation."""
    conversation, s1, facts = opened()
    conversation.record(facts.appended(s1, "m1"))
    _, s2 = conversation.reset(reason="reset", at=T0)
    conversation.collect_events()
    assert outcome(conversation.record(facts.appended(s1, "m1"))) == ("duplicate", s1, s2)
    assert conversation.collect_events() == []


# -- invariant 6: co-tenants never collide ------------------------------------------------------


def test_co_tenant_writers_on_the_current_generation_all_succeed() -> None:
    """Invariant 6, co-tenants never collide (docs/invariants.md): heartbeat, cron,
    ingress and the runner appending to one generation in turn, with runs of their own
    overlapping, are all applied; nobody is told of a takeover."""
    conversation, s1, facts = opened()
    parent = None
    for n, writer in enumerate(("heartbeat", "cron", "ingress", "runner", "system")):
        fact = facts.appended(s1, f"m{n}", parent=parent, writer=writer)  # type: ignore[arg-type]
        assert outcome(conversation.record(fact)) == ("applied", s1, s1), writer
        parent = f"m{n}"
    for n, trigger in enumerate(("user", "heartbeat", "cron")):
        fact = facts.started(s1, f"r{n}", trigger=trigger)  # type: ignore[arg-type]
        assert conversation.record(fact).outcome == "applied"
    for n in (1, 0, 2):
        assert conversation.record(facts.ended(s1, f"r{n}")).outcome == "applied"
    assert len(conversation.collect_events()) == 11


def test_a_real_takeover_names_the_current_session_id() -> None:
    """Invariant 6, co-tenants never collide (docs/invariants.md): a writer whose
    generation was rotated or deleted is told so, with the current sessionId (none once
    deleted)."""
    conversation, s1, s2, facts = rotated()
    assert outcome(conversation.record(facts.appended(s1, "m1"))) == ("archived", s1, s2)
    conversation.delete(at=T0)
    assert outcome(conversation.record(facts.appended(s2, "m1"))) == ("archived", s2, None)


# -- invariant 7: compare-and-swap on reset and delete -------------------------------------------


@pytest.mark.parametrize("command", ["reset", "delete"])
def test_a_stale_expected_session_id_is_a_conflict_naming_the_current_one(command: str) -> None:
    """Invariant 7, compare-and-swap (docs/invariants.md): a mismatch raises
    SessionChanged with the current sessionId and records nothing."""
    conversation, s1, s2, _ = rotated()
    with pytest.raises(SessionChanged) as raised:
        if command == "reset":
            conversation.reset(reason="reset", at=T0, expected_session_id=s1)
        else:
            conversation.delete(at=T0, expected_session_id=s1)
    assert (raised.value.expected_session_id, raised.value.current_session_id) == (s1, s2)
    assert conversation.collect_events() == []
    assert conversation.current_session_id == s2


def test_a_matching_or_absent_expected_session_id_goes_through() -> None:
    """Invariant 7, compare-and-swap (docs/invariants.md): never a silent no-op either."""
    conversation, s1, _ = opened()
    previous, s2 = conversation.reset(reason="reset", at=T0, expected_session_id=s1)
    assert previous == s1 != s2
    _, s3 = conversation.reset(reason="reset", at=T0)
    assert conversation.delete(at=T0, expected_session_id=s3) == s3
    kinds = [e.type for e in conversation.collect_events()]
    assert kinds == ["session.rotated", "generation.opened"] * 2 + ["session.deleted"]


@pytest.mark.parametrize("command", ["reset", "resolve"])
def test_a_new_session_id_is_never_one_the_key_used(command: str) -> None:
    """Invariant 7 and 10 (docs/invariants.md): a sessionId names one generation forever,
    so a reset or rotation to a used one is refused before anything is recorded."""
    conversation, s1, s2, _ = rotated()
    for used in (s1, s2):
        with pytest.raises(InvalidEvent) as raised:
            if command == "reset":
                conversation.reset(reason="reset", at=T0, new_session_id=used)
            else:
                conversation.resolve(
                    now=T0 + 48 * HOUR,
                    interaction="user",
                    policy=FreshnessPolicy(mode="idle", idle_minutes=1),
                    new_session_id=used,
                )
        assert raised.value.field == "sessionId"
    assert conversation.collect_events() == []
    assert conversation.current_session_id == s2


# -- invariant 8: no resurrection ------------------------------------------------------------


def deleted() -> tuple[Conversation, str, Facts]:
    conversation, s1, facts = opened()
    conversation.record(facts.started(s1, "r1"))
    conversation.record(facts.bound(s1, "cli", "c1"))
    assert conversation.delete(at=T0) == s1
    conversation.collect_events()
    return conversation, s1, facts


@pytest.mark.parametrize("interaction", MACHINE)
def test_machine_traffic_never_reopens_a_deleted_key(interaction: Interaction) -> None:
    """Invariant 8, no resurrection (docs/invariants.md)."""
    conversation, s1, _ = deleted()
    with pytest.raises(SessionDeleted) as raised:
        conversation.resolve(now=T0, interaction=interaction, policy=FreshnessPolicy())
    assert raised.value.session_id == s1
    assert conversation.collect_events() == []
    assert conversation.current_session_id is None


def test_late_facts_of_a_deleted_key_are_archived_against_the_dead_generation() -> None:
    """Invariant 8, no resurrection (docs/invariants.md): late events are recorded
    against the deleted generation and the key stays without a current generation."""
    conversation, s1, facts = deleted()
    for fact in late_facts(facts, s1):
        assert outcome(conversation.record(fact)) == ("archived", s1, None), fact.type
    events = conversation.collect_events()
    assert {e.session_id for e in events} == {s1}
    assert not any(isinstance(e, GenerationOpened) for e in events)
    assert conversation.current_session_id is None


@pytest.mark.parametrize("command", ["reset", "delete"])
def test_a_deleted_key_cannot_be_reset_or_deleted_again(command: str) -> None:
    """Invariant 8, no resurrection (docs/invariants.md): an operator's reset does not
    reopen a deleted key either."""
    conversation, s1, _ = deleted()
    with pytest.raises(SessionDeleted) as raised:
        if command == "reset":
            conversation.reset(reason="reset", at=T0, expected_session_id=s1)
        else:
            conversation.delete(at=T0)
    assert raised.value.session_id == s1
    assert conversation.collect_events() == []


def test_only_a_user_starts_a_deleted_key_over_on_a_new_lineage() -> None:
    """Invariant 8, no resurrection (docs/invariants.md): a user message starts a new
    conversation on the key, linked to nothing; the deleted generation stays dead."""
    conversation, s1, facts = deleted()
    resolution = conversation.resolve(now=T0 + HOUR, interaction="user", policy=FreshnessPolicy())
    assert (resolution.rotated, resolution.reason, resolution.previous_session_id) == (
        True,
        "new",
        None,
    )
    opened_event = conversation.collect_events()[0]
    assert isinstance(opened_event, GenerationOpened)
    assert (opened_event.previous_session_id, opened_event.bindings) == (None, {})
    s2 = resolution.session_id
    assert outcome(conversation.record(facts.ended(s1, "r1"))) == ("archived", s1, s2)


# -- invariant 10: rollover keeps the history reachable ---------------------------------------


def carrying() -> tuple[Conversation, str, Facts]:
    conversation, s1, facts = opened()
    conversation.record(facts.bound(s1, "claude-cli", "abc"))
    conversation.record(facts.overridden(s1, model="gpt-5", thinking="high"))
    conversation.record(facts.overridden(s1, thinking=None))  # null removes an override
    conversation.collect_events()
    return conversation, s1, facts


def opening(conversation: Conversation) -> tuple[SessionRotated, GenerationOpened]:
    rotation, opened_event = conversation.collect_events()
    assert isinstance(rotation, SessionRotated) and isinstance(opened_event, GenerationOpened)
    return rotation, opened_event


def test_an_idle_rollover_carries_bindings_and_overrides_and_links_the_lineage() -> None:
    """Invariant 10, lineage (docs/invariants.md): a soft rollover rotates the runtime,
    not the history."""
    conversation, s1, facts = carrying()
    _, s2 = conversation.reset(reason="idle", at=T0)
    rotation, opened_event = opening(conversation)
    assert (rotation.session_id, rotation.to_session_id, rotation.reason) == (s1, s2, "idle")
    assert rotation.carried == ["binding:claude-cli", "override:model"]
    assert opened_event.session_id == s2 and opened_event.previous_session_id == s1
    assert (opened_event.bindings, opened_event.overrides) == (
        {"claude-cli": "abc"},
        {"model": "gpt-5"},
    )
    # The carried binding is the new generation's own: it can be dropped there.
    assert conversation.record(facts.unbound(s2, "claude-cli")).outcome == "applied"


def test_an_idle_expiry_on_resolve_is_the_same_soft_rollover() -> None:
    """Invariant 10, lineage, and invariant 11, freshness (docs/invariants.md)."""
    conversation, s1, _ = carrying()
    policy = FreshnessPolicy(mode="idle", idle_minutes=30)
    resolution = conversation.resolve(now=T0 + HOUR, interaction="user", policy=policy)
    assert (resolution.rotated, resolution.reason, resolution.previous_session_id) == (
        True,
        "idle",
        s1,
    )
    _, opened_event, _interaction = conversation.collect_events()
    assert isinstance(opened_event, GenerationOpened)
    assert opened_event.bindings == {"claude-cli": "abc"}
    assert opened_event.previous_session_id == s1


@pytest.mark.parametrize("reason", HARD)
def test_a_hard_reset_carries_only_the_lineage_link(reason: ResetReason) -> None:
    """Invariant 10, lineage (docs/invariants.md): /new, /reset, daily and admin carry
    nothing but previousSessionId."""
    conversation, s1, facts = carrying()
    _, s2 = conversation.reset(reason=reason, at=T0)
    rotation, opened_event = opening(conversation)
    assert rotation.carried == []
    assert (opened_event.previous_session_id, opened_event.bindings, opened_event.overrides) == (
        s1,
        {},
        {},
    )
    assert rejected_field(conversation.record(facts.unbound(s2, "claude-cli"))) == "provider"


def test_dropping_a_binding_the_generation_does_not_have_is_rejected() -> None:
    conversation, s1, facts = opened()
    assert rejected_field(conversation.record(facts.unbound(s1, "cli"))) == "provider"
    conversation.record(facts.bound(s1, "cli", "c1"))
    assert conversation.record(facts.unbound(s1, "cli")).outcome == "applied"
    assert rejected_field(conversation.record(facts.unbound(s1, "cli"))) == "provider"


# -- invariant 11: freshness by the right clock ----------------------------------------------


@pytest.mark.parametrize("interaction", MACHINE)
def test_machine_traffic_neither_rotates_nor_records(interaction: Interaction) -> None:
    """Invariant 11, freshness (docs/invariants.md): heartbeat, cron and system neither
    keep a session fresh nor rotate it, however long it has been idle."""
    conversation, s1, _ = opened()
    policy = FreshnessPolicy(mode="idle+daily", idle_minutes=1)
    resolution = conversation.resolve(now=T0 + 1000 * HOUR, interaction=interaction, policy=policy)
    assert (resolution.session_id, resolution.rotated, resolution.reason) == (s1, False, None)
    assert conversation.collect_events() == []


@pytest.mark.parametrize(
    ("touch", "fresh"),
    [
        ("user-run", True),
        ("ingress-append", True),
        ("cron-run", False),
        ("heartbeat-run", False),
        ("runner-append", False),
        ("heartbeat-resolve", False),
    ],
)
def test_idle_time_counts_from_the_last_user_or_ingress_interaction(
    touch: str, fresh: bool
) -> None:
    """Invariant 11, freshness (docs/invariants.md): a user run or an ingress append
    keeps the generation fresh; machine runs, runner appends and machine resolves don't."""
    conversation, s1, facts = opened()
    policy = FreshnessPolicy(mode="idle", idle_minutes=60)
    at = T0 + timedelta(minutes=50)
    if touch.endswith("-run"):
        conversation.record(facts.started(s1, "r1", trigger=touch[: -len("-run")], at=at))  # type: ignore[arg-type]
    elif touch.endswith("-append"):
        writer = touch[: -len("-append")]
        conversation.record(facts.appended(s1, "m1", writer=writer, at=at))  # type: ignore[arg-type]
    else:
        conversation.resolve(now=at, interaction="heartbeat", policy=policy)
    resolution = conversation.resolve(
        now=T0 + timedelta(minutes=100), interaction="user", policy=policy
    )
    assert resolution.rotated == (not fresh)
    assert resolution.reason == (None if fresh else "idle")


def test_a_user_resolve_itself_keeps_the_generation_fresh() -> None:
    """Invariant 11, freshness (docs/invariants.md)."""
    conversation, s1, _ = opened()
    policy = FreshnessPolicy(mode="idle", idle_minutes=60)
    for minutes in (50, 100, 150):
        resolution = conversation.resolve(
            now=T0 + timedelta(minutes=minutes), interaction="user", policy=policy
        )
        assert (resolution.session_id, resolution.rotated) == (s1, False)
    assert conversation.resolve(now=T0 + 5 * HOUR, interaction="user", policy=policy).rotated


def test_daily_expiry_counts_from_the_generation_start_not_from_activity() -> None:
    """Invariant 11, freshness (docs/invariants.md): a busy generation still rolls over
    at the daily boundary."""
    conversation, s1, _ = opened()  # opened 10:00 UTC
    policy = FreshnessPolicy(mode="daily", at_hour=4, timezone="UTC")
    for hours in range(1, 18):  # a message every hour until 03:00 the next day
        resolution = conversation.resolve(now=T0 + hours * HOUR, interaction="user", policy=policy)
        assert resolution.session_id == s1
    resolution = conversation.resolve(now=T0 + 18 * HOUR, interaction="user", policy=policy)
    assert (resolution.rotated, resolution.reason, resolution.previous_session_id) == (
        True,
        "daily",
        s1,
    )


# -- invariant 12: transcript integrity -------------------------------------------------------


def test_appended_entries_are_hash_chained_per_generation() -> None:
    """Invariant 12, transcript integrity (docs/invariants.md): each entry links the
    previous one's hash; a new generation's chain starts again from the genesis hash."""
    conversation, s1, facts = opened()
    appended = [
        facts.appended(s1, "m1"),
        facts.appended(s1, "m2", parent="m1"),
        facts.appended(s1, "m3", parent="m1", role="user"),
    ]
    for fact in appended:
        conversation.record(fact)
    _, s2 = conversation.reset(reason="idle", at=T0)
    conversation.record(facts.appended(s2, "m1"))
    events = [e for e in conversation.collect_events() if isinstance(e, TranscriptAppended)]
    head = GENESIS_HASH
    for seq, (fact, event) in enumerate(zip(appended, events, strict=False), start=1):
        assert (event.seq, event.prev_hash) == (seq, head)
        assert event.entry_hash == chain_hash(head, fact.entry.digest())
        head = event.entry_hash
    first_of_s2 = events[-1]
    assert (first_of_s2.session_id, first_of_s2.seq, first_of_s2.prev_hash) == (s2, 1, GENESIS_HASH)


def test_an_entry_id_is_unique_within_its_generation_only() -> None:
    """Invariant 12, transcript integrity (docs/invariants.md): an entry id reused with
    other content is rejected; the same id in another generation is a new entry."""
    conversation, s1, facts = opened()
    conversation.record(facts.appended(s1, "m1"))
    decision = conversation.record(facts.appended(s1, "m1", text="edited"))
    assert rejected_field(decision) == "entry.id"
    decision = conversation.record(facts.appended(s1, "m1", role="user"))
    assert rejected_field(decision) == "entry.id"
    _, s2 = conversation.reset(reason="reset", at=T0)
    assert conversation.record(facts.appended(s2, "m1", text="edited")).outcome == "applied"


def test_a_parent_must_be_an_entry_of_the_same_generation() -> None:
    """Invariant 12, transcript integrity (docs/invariants.md)."""
    conversation, s1, facts = opened()
    conversation.record(facts.appended(s1, "m1"))
    assert rejected_field(conversation.record(facts.appended(s1, "m2", parent="m9"))) == (
        "entry.parentId"
    )
    _, s2 = conversation.reset(reason="idle", at=T0)  # even a soft rollover: history stays put
    decision = conversation.record(facts.appended(s2, "m2", parent="m1"))
    assert rejected_field(decision) == "entry.parentId"
    assert conversation.record(facts.appended(s2, "m1")).outcome == "applied"
    assert conversation.record(facts.appended(s2, "m2", parent="m1")).outcome == "applied"


# -- maintenance: pruning -------------------------------------------------------------------


def test_prune_refuses_unknown_current_running_and_pruned_generations() -> None:
    """Maintenance never prunes the current generation nor one that still runs
    (invariant 2: a running run must be able to end), and never twice."""
    conversation, s1, facts = opened()
    conversation.record(facts.started(s1, "r1"))
    _, s2 = conversation.reset(reason="reset", at=T0)
    conversation.collect_events()
    assert "not a generation" in conversation.prune("nope", at=T0, reason="old")
    assert "is current" in conversation.prune(s2, at=T0, reason="old")
    assert "running runs: r1" in conversation.prune(s1, at=T0, reason="old")
    assert conversation.collect_events() == []
    conversation.record(facts.ended(s1, "r1"))
    conversation.collect_events()
    assert conversation.prune(s1, at=T0, reason="old") == ""
    (pruned,) = conversation.collect_events()
    assert (pruned.type, pruned.session_id) == ("generation.pruned", s1)
    assert "already pruned" in conversation.prune(s1, at=T0, reason="old")


def test_a_pruned_generation_takes_no_more_facts() -> None:
    conversation, s1, facts = opened()
    conversation.record(facts.appended(s1, "m1"))
    conversation.reset(reason="reset", at=T0)
    assert conversation.prune(s1, at=T0, reason="old") == ""
    conversation.collect_events()
    for fact in (facts.appended(s1, "m1"), facts.appended(s1, "m2"), facts.started(s1, "r5")):
        decision = conversation.record(fact)
        assert rejected_field(decision) == "sessionId" and "pruned" in (decision.reason or "")
    assert conversation.collect_events() == []


# -- invariant 3 at the aggregate: rebuilt from its events, it decides the same ---------------


def probes(traffic: Traffic) -> list[Fact]:
    """Facts whose answers depend on everything the aggregate remembers."""
    facts = traffic.facts
    found: list[Fact] = []
    for sid in dict.fromkeys([*traffic.lineage, "nope"]):
        for n in range(4):
            found += [
                facts.started(sid, f"r{n}"),
                facts.ended(sid, f"r{n}"),
                facts.appended(sid, f"m{n}"),
                facts.appended(sid, f"m{n}", parent="m0"),
            ]
        found += [facts.unbound(sid, "a"), facts.unbound(sid, "b")]
    return found


def answers(conversation: Conversation, traffic: Traffic) -> list[tuple[Any, ...]]:
    """What the aggregate answers to the probes, asked in order (each accepted probe is
    recorded, so two aggregates asked alike must stay alike to agree)."""
    return [
        (d.outcome, d.session_id, d.current_session_id, d.reason)
        for d in (conversation.record(fact, T0) for fact in probes(traffic))
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(TRAFFIC, min_size=5, max_size=30), st.booleans())
def test_an_aggregate_rebuilt_from_its_events_decides_as_the_live_one(
    script: list[tuple[Any, ...]], from_snapshot: bool
) -> None:
    """Invariant 3, replay equals live (docs/invariants.md), for the aggregate: the same
    events, folded from scratch (or from a snapshot taken on the way), give an aggregate
    that answers every later fact exactly as the one that recorded them."""
    traffic = Traffic()
    live = traffic.conversation
    for command in script:
        traffic.play(command)
    history = cast(list[LedgerEvent], live.collect_events())
    if from_snapshot:
        cut = len(history) // 2
        partial = project_conversation(None, history[:cut])
        snapshot = partial.take_snapshot() if partial is not None else None
        rebuilt = project_conversation(
            Conversation.from_snapshot(snapshot) if snapshot else None, history[cut:]
        )
    else:
        rebuilt = project_conversation(None, history)
    assert rebuilt is not None
    assert rebuilt.version == live.version == len(history)
    assert rebuilt.current_session_id == live.current_session_id
    assert answers(rebuilt, traffic) == answers(live, traffic)
