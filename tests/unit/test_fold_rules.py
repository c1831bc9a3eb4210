"""Every rule of the fold, through its public entry points (`replay` over a log, a
`RowSet` that folds one event at a time), without I/O.

The events come from the aggregate's public commands, as the store logs them; each test
names the invariant of docs/invariants.md it holds the rows to and looks only at rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.events import GENESIS_HASH, LedgerEvent, TranscriptAppended, chain_hash
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.domain.values import Usage
from sessionledger.projections.replay import RowsByTable, replay, replayed_rows
from sessionledger.projections.rows import GenerationRow, RunRow, SessionRow
from sessionledger.projections.state import RowSet
from tests.helpers import KEY, T0, TRAFFIC, Facts, Log, Traffic

MINUTE = timedelta(minutes=1)


def ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


class Key:
    """One key's aggregate, its log, and the rows a fresh fold of the log gives."""

    def __init__(self, key: str = KEY) -> None:
        self.conversation = Conversation.open(key, at=T0, writer="ingress", session_id="s1")
        self.facts = Facts(key)
        self.log = Log()
        self.log.take(self.conversation)

    def record(self, *facts: Any, at: datetime = T0) -> None:
        for fact in facts:
            decision = self.conversation.record(fact, at)
            assert decision.outcome in ("applied", "archived"), decision
        self.log.take(self.conversation)

    def reset(self, reason: Any = "reset", new: str = "s2") -> None:
        self.conversation.reset(reason=reason, at=T0, new_session_id=new)
        self.log.take(self.conversation)

    def delete(self) -> None:
        self.conversation.delete(at=T0)
        self.log.take(self.conversation)

    def rows(self) -> RowsByTable:
        return self.log.rows()

    def generation(self, sid: str) -> GenerationRow:
        row: GenerationRow = self.rows()["generations"][sid]
        return row

    def run(self, run_id: str) -> RunRow:
        row: RunRow = self.rows()["runs"][run_id]
        return row

    def session(self) -> SessionRow | None:
        found: SessionRow | None = self.rows()["sessions"].get(self.conversation.session_key)
        return found


# -- generations and the session pointer -------------------------------------------------------


def test_opening_a_key_makes_a_current_generation_and_points_the_key_at_it() -> None:
    key = Key()
    session = key.session()
    assert session is not None and session.session_id == "s1"
    assert (session.agent, session.channel, session.kind) == ("main", "telegram", "direct")
    generation = key.generation("s1")
    assert (generation.state, generation.status, generation.open_reason) == (
        "current",
        "new",
        "new",
    )
    assert (generation.previous_session_id, generation.entry_count, generation.head_hash) == (
        None,
        0,
        GENESIS_HASH,
    )
    assert generation.opened_at == T0 and generation.opened_position == 1


def test_a_rotation_archives_the_old_generation_and_moves_the_pointer() -> None:
    """Invariant 10, lineage (docs/invariants.md): the archived generation names its
    successor, the new one its predecessor; the key keeps its creation time."""
    key = Key()
    created = key.session()
    key.reset("daily")
    old, new, session = key.generation("s1"), key.generation("s2"), key.session()
    assert (old.state, old.archive_reason, old.next_session_id) == ("archived", "daily", "s2")
    assert old.archived_at is not None
    assert (new.state, new.open_reason, new.previous_session_id) == ("current", "daily", "s1")
    assert new.opened_position > old.opened_position
    assert session is not None and created is not None
    assert (session.session_id, session.created_at) == ("s2", created.created_at)


def test_an_idle_rollover_carries_bindings_and_overrides_into_the_new_row() -> None:
    """Invariant 10, lineage (docs/invariants.md): soft carries, hard does not."""
    key = Key()
    key.record(key.facts.bound("s1", "cli", "c1"), key.facts.overridden("s1", model="m"))
    key.reset("idle", new="s2")
    key.reset("reset", new="s3")
    assert (key.generation("s2").bindings, key.generation("s2").overrides) == (
        {"cli": "c1"},
        {"model": "m"},
    )
    assert (key.generation("s3").bindings, key.generation("s3").overrides) == ({}, {})
    assert key.generation("s1").bindings == {"cli": "c1"}  # the archived row keeps its own


def test_a_deletion_removes_the_pointer_and_tombstones_the_generation() -> None:
    """Invariant 8, no resurrection (docs/invariants.md)."""
    key = Key()
    key.delete()
    assert key.session() is None
    deletion = list(key.rows()["receipts"].values())[-1]
    assert (deletion.session_id, deletion.outcome, deletion.current_session_id) == (
        "s1",
        "applied",
        None,
    )
    generation = key.generation("s1")
    assert (generation.state, generation.archive_reason) == ("deleted", "deleted")
    assert generation.archived_at is not None


def test_a_late_event_after_a_deletion_recreates_no_row() -> None:
    """Invariant 8, no resurrection (docs/invariants.md): late events of a deleted key's
    runs land on the dead generation, counted late, and no session row comes back."""
    key = Key()
    key.record(key.facts.started("s1", "r1"))
    key.reset(new="s2")
    key.delete()
    before = key.rows()
    late = [
        key.facts.ended("s1", "r1"),
        key.facts.appended("s2", "m1"),
        key.facts.bound("s2", "p", "c"),
    ]
    key.record(*late)
    after = key.rows()
    assert after["sessions"] == {} == before["sessions"]
    assert after["generations"]["s2"].state == "deleted"
    assert after["generations"]["s2"].late_events == 2
    assert after["generations"]["s1"].late_events == 1
    assert [r.current_session_id for r in after["receipts"].values()][-3:] == [None] * 3
    assert [r.outcome for r in after["receipts"].values()][-3:] == ["archived"] * 3


def test_a_user_starting_over_after_a_deletion_gets_a_new_key_row() -> None:
    key = Key()
    key.delete()
    key.conversation.resolve(
        now=T0 + MINUTE, interaction="user", policy=FreshnessPolicy(), new_session_id="s2"
    )
    key.log.take(key.conversation)
    session = key.session()
    assert session is not None and session.session_id == "s2"
    assert key.generation("s2").previous_session_id is None
    assert key.generation("s1").state == "deleted"


# -- invariant 1: the generation fence -------------------------------------------------------


def test_late_events_change_only_their_own_archived_generation() -> None:
    """Invariant 1, generation fence (docs/invariants.md): after s1 -> s2, a late start,
    end, error, append, binding or override tagged s1 updates s1's row (and counts as a
    late event there) and leaves the key's pointer and s2's row exactly as they were."""
    key = Key()
    facts = key.facts
    key.record(facts.started("s1", "r1"), facts.started("s1", "r2"), facts.bound("s1", "p", "c"))
    key.reset(new="s2")
    before = key.rows()
    key.record(
        facts.ended("s1", "r1", usage=Usage(input=7)),
        facts.errored("s1", "r2", usage=Usage(output=3)),
        facts.started("s1", "r3", trigger="user", at=T0 + MINUTE),
        facts.appended("s1", "m1", writer="ingress", at=T0 + 2 * MINUTE),
        facts.unbound("s1", "p"),
        facts.overridden("s1", model="m"),
    )
    after = key.rows()
    assert after["sessions"] == before["sessions"]
    assert after["generations"]["s2"] == before["generations"]["s2"]
    old = after["generations"]["s1"]
    assert old.late_events == 6
    assert (old.status, old.active_run_ids, old.entry_count) == ("running", ("r3",), 1)
    assert (old.input_tokens, old.output_tokens, old.bindings, old.overrides) == (
        7,
        3,
        {},
        {"model": "m"},
    )
    assert after["runs"]["r3"].late and after["runs"]["r1"].late
    assert [r.outcome for r in after["receipts"].values()][-6:] == ["archived"] * 6
    assert {r.current_session_id for r in list(after["receipts"].values())[-6:]} == {"s2"}


def test_events_on_the_current_generation_are_not_late() -> None:
    """Invariant 1, generation fence (docs/invariants.md): the count is of late events only."""
    key = Key()
    key.record(key.facts.started("s1", "r1"), key.facts.ended("s1", "r1"))
    assert key.generation("s1").late_events == 0
    assert not key.run("r1").late
    assert [r.outcome for r in key.rows()["receipts"].values()] == ["applied"] * 3


def test_a_run_started_on_time_and_ended_late_is_marked_late() -> None:
    """Invariant 1, generation fence (docs/invariants.md)."""
    key = Key()
    key.record(key.facts.started("s1", "r1"))
    key.reset(new="s2")
    key.record(key.facts.ended("s1", "r1"))
    run = key.run("r1")
    assert run.late and run.status == "done" and run.session_id == "s1"


def test_a_skewed_end_is_clamped_to_the_start_never_dropped() -> None:
    """Invariant 1 (identity decides, not clocks) and invariant 2 (runtimeMs =
    endedAt - startedAt, never negative) (docs/invariants.md)."""
    key = Key()
    key.record(key.facts.started("s1", "r1", at=T0))
    key.record(key.facts.ended("s1", "r1", at=T0 - 3 * MINUTE))
    run, generation = key.run("r1"), key.generation("s1")
    assert (run.status, run.ended_at, run.runtime_ms) == ("done", T0, 0)
    assert (generation.status, generation.ended_at, generation.runtime_ms) == ("done", T0, 0)


# -- invariant 2: no impossible rows ----------------------------------------------------------


def test_a_run_row_follows_its_run_from_start_to_end() -> None:
    """Invariant 2, no impossible rows (docs/invariants.md)."""
    key = Key()
    key.record(key.facts.started("s1", "r1", at=T0, model="opus", provider="anthropic"))
    run = key.run("r1")
    assert (run.status, run.started_at, run.ended_at, run.runtime_ms) == ("running", T0, None, None)
    assert (run.agent, run.channel, run.model, run.provider) == (
        "main",
        "telegram",
        "opus",
        "anthropic",
    )
    usage = Usage(input=1, output=2, cache_read=3, cache_write=4)
    key.record(key.facts.ended("s1", "r1", outcome="timeout", at=T0 + MINUTE, usage=usage))
    run = key.run("r1")
    assert (run.status, run.ended_at, run.runtime_ms) == ("timeout", T0 + MINUTE, 60_000)
    assert (run.input_tokens, run.output_tokens, run.cache_read_tokens, run.cache_write_tokens) == (
        1,
        2,
        3,
        4,
    )
    assert run.started_position < run.ended_position  # type: ignore[operator]


def test_an_errored_run_is_failed_with_its_error() -> None:
    """Invariant 2, no impossible rows (docs/invariants.md)."""
    key = Key()
    key.record(key.facts.started("s1", "r1"), key.facts.errored("s1", "r1", at=T0 + MINUTE))
    run, generation = key.run("r1"), key.generation("s1")
    assert (run.status, run.error, run.ended_at) == ("failed", "boom", T0 + MINUTE)
    assert (generation.status, generation.last_error, generation.has_active_run) == (
        "failed",
        "boom",
        False,
    )


def test_status_follows_the_newest_active_run_then_the_last_to_end() -> None:
    """Invariant 2, no impossible rows (docs/invariants.md): running while any run is
    active, and the status and times of one run, never a mix."""
    key = Key()
    facts = key.facts
    key.record(facts.started("s1", "a", at=T0), facts.started("s1", "b", at=T0 + MINUTE))
    generation = key.generation("s1")
    assert (generation.status, generation.last_run_id, generation.active_run_ids) == (
        "running",
        "b",
        ("a", "b"),
    )
    key.record(facts.ended("s1", "b", at=T0 + 2 * MINUTE))
    generation = key.generation("s1")
    # b ended, a still runs: the row describes a (its start, no end).
    assert (generation.status, generation.last_run_id, generation.active_run_ids) == (
        "running",
        "a",
        ("a",),
    )
    assert (generation.started_at, generation.ended_at, generation.runtime_ms) == (T0, None, None)
    key.record(facts.ended("s1", "a", outcome="killed", at=T0 + 5 * MINUTE))
    generation = key.generation("s1")
    assert (generation.status, generation.last_run_id, generation.active_run_ids) == (
        "killed",
        "a",
        (),
    )
    assert (generation.ended_at, generation.runtime_ms) == (T0 + 5 * MINUTE, 300_000)


def test_tokens_add_up_over_the_generations_runs_once_each() -> None:
    """Invariant 4, exactly once (docs/invariants.md): each end adds its usage once."""
    key = Key()
    facts = key.facts
    key.record(facts.started("s1", "a"), facts.started("s1", "b"))
    key.record(facts.ended("s1", "a", usage=Usage(input=10, output=1, cache_read=2)))
    key.record(facts.errored("s1", "b", usage=Usage(input=5, cache_write=4)))
    generation = key.generation("s1")
    assert (
        generation.input_tokens,
        generation.output_tokens,
        generation.cache_read_tokens,
        generation.cache_write_tokens,
    ) == (15, 1, 2, 4)


def test_model_and_provider_keep_the_last_one_named() -> None:
    key = Key()
    key.record(key.facts.started("s1", "a", model="opus", provider="anthropic"))
    key.record(key.facts.started("s1", "b"))
    generation = key.generation("s1")
    assert (generation.model, generation.provider) == ("opus", "anthropic")
    key.record(key.facts.started("s1", "c", model="gpt"))
    assert key.generation("s1").model == "gpt"


# -- invariant 4: exactly once -----------------------------------------------------------------


def test_every_event_leaves_exactly_one_receipt_at_its_position() -> None:
    """Invariant 4, exactly once (docs/invariants.md): one receipt per event, naming its
    position, generation and outcome; the fold without receipts makes the same rows."""
    key = Key()
    key.record(key.facts.started("s1", "r1"), key.facts.appended("s1", "m1"))
    key.reset(new="s2")
    key.record(key.facts.ended("s1", "r1"))
    receipts = key.rows()["receipts"]
    assert [(r.event_id, r.position) for r in receipts.values()] == [
        (event.event_id, position) for position, event in key.log.positioned()
    ]
    assert [(r.session_id, r.outcome, r.current_session_id) for r in receipts.values()] == [
        ("s1", "applied", "s1"),
        ("s1", "applied", "s1"),
        ("s1", "applied", "s1"),
        ("s1", "applied", "s1"),  # session.rotated: the pointer moves with the next event
        ("s2", "applied", "s2"),
        ("s1", "archived", "s2"),
    ]
    silent = RowSet(receipts=False)
    for position, event in key.log.positioned():
        silent.apply(event, position)
    without = replayed_rows(silent)
    assert without["receipts"] == {}
    assert {t: rows for t, rows in without.items() if t != "receipts"} == {
        t: rows for t, rows in key.rows().items() if t != "receipts"
    }


# -- invariant 6: co-tenants never collide ------------------------------------------------------


def test_co_tenant_writers_interleaved_on_one_generation_all_land_on_its_row() -> None:
    """Invariant 6, co-tenants never collide (docs/invariants.md): heartbeat, cron,
    ingress and the runner writing to the current generation in turn are each applied
    to it, none undoing another's: every entry, run and binding is there."""
    key = Key()
    facts = key.facts
    key.record(
        facts.started("s1", "cron-run", trigger="cron"),
        facts.appended("s1", "m1", writer="heartbeat"),
        facts.started("s1", "user-run", trigger="user"),
        facts.appended("s1", "m2", parent="m1", writer="ingress"),
        facts.bound("s1", "cli", "c1"),
        facts.appended("s1", "m3", parent="m2", writer="cron"),
        facts.ended("s1", "cron-run", usage=Usage(input=4)),
        facts.appended("s1", "m4", parent="m3", writer="runner"),
    )
    rows = key.rows()
    generation = rows["generations"]["s1"]
    assert (generation.entry_count, generation.active_run_ids, generation.bindings) == (
        4,
        ("user-run",),
        {"cli": "c1"},
    )
    assert (generation.status, generation.last_run_id, generation.input_tokens) == (
        "running",
        "user-run",
        4,
    )
    assert [e.entry_id for e in sorted(rows["entries"].values(), key=lambda e: e.seq)] == [
        "m1",
        "m2",
        "m3",
        "m4",
    ]
    assert {r.outcome for r in rows["receipts"].values()} == {"applied"}
    assert generation.late_events == 0


# -- invariant 9: resumable only with a transcript -----------------------------------------------


@pytest.mark.parametrize("role", ["user", "toolResult", "bashExecution", "system", "custom"])
def test_a_generation_without_an_assistant_entry_is_not_resumable(role: Any) -> None:
    """Invariant 9, resumable only with a transcript (docs/invariants.md): runs and
    entries of other roles (shell-only cron work) never make a generation resumable."""
    key = Key()
    key.record(key.facts.started("s1", "r1", trigger="cron"), key.facts.ended("s1", "r1"))
    key.record(key.facts.appended("s1", "m1", role=role))
    assert not key.generation("s1").resumable
    key.record(key.facts.appended("s1", "m2", role="assistant"))
    key.record(key.facts.appended("s1", "m3", role=role))
    assert key.generation("s1").resumable


def test_resumable_is_per_generation() -> None:
    """Invariant 9 (docs/invariants.md): a new generation has no transcript, even after a
    soft rollover."""
    key = Key()
    key.record(key.facts.appended("s1", "m1", role="assistant"))
    key.reset("idle", new="s2")
    assert key.generation("s1").resumable and not key.generation("s2").resumable


# -- invariant 11: freshness by the right clock -----------------------------------------------


def test_last_interaction_follows_user_runs_and_ingress_appends_only() -> None:
    """Invariant 11, freshness (docs/invariants.md): only user/ingress interactions move
    lastInteractionAt, and never backwards."""
    key = Key()
    facts = key.facts
    key.record(
        facts.started("s1", "cron", trigger="cron", at=T0 + 9 * MINUTE),
        facts.started("s1", "beat", trigger="heartbeat", at=T0 + 9 * MINUTE),
        facts.appended("s1", "m1", writer="runner", at=T0 + 9 * MINUTE),
        facts.appended("s1", "m2", writer="heartbeat", at=T0 + 9 * MINUTE),
    )
    assert key.generation("s1").last_interaction_at is None
    key.record(facts.started("s1", "user", trigger="user", at=T0 + 2 * MINUTE))
    assert key.generation("s1").last_interaction_at == T0 + 2 * MINUTE
    key.record(facts.appended("s1", "m3", writer="ingress", at=T0 + 4 * MINUTE))
    assert key.generation("s1").last_interaction_at == T0 + 4 * MINUTE
    key.record(facts.appended("s1", "m4", writer="ingress", at=T0 + MINUTE))  # an older one
    assert key.generation("s1").last_interaction_at == T0 + 4 * MINUTE


def test_a_user_resolve_records_the_interaction_machine_resolves_do_not() -> None:
    """Invariant 11, freshness (docs/invariants.md)."""
    key = Key()
    policy = FreshnessPolicy()
    key.conversation.resolve(now=T0 + 5 * MINUTE, interaction="heartbeat", policy=policy)
    key.log.take(key.conversation)
    assert key.generation("s1").last_interaction_at is None
    key.conversation.resolve(now=T0 + 7 * MINUTE, interaction="user", policy=policy)
    key.log.take(key.conversation)
    assert key.generation("s1").last_interaction_at == T0 + 7 * MINUTE


def test_times_are_stored_in_utc() -> None:
    """Rows hold instants in UTC whatever offset the reporter wrote (invariant 11:
    freshness compares instants)."""
    key = Key()
    elsewhere = datetime(2026, 11, 21, 12, 0, tzinfo=UTC).astimezone(ZoneInfo("Asia/Kolkata"))
    key.record(key.facts.started("s1", "r1", at=elsewhere))
    run = key.run("r1")
    assert run.started_at == elsewhere and run.started_at.utcoffset() == timedelta(0)


# -- bindings and overrides ---------------------------------------------------------------------


def test_bindings_are_set_replaced_and_dropped_overrides_merge_and_null_removes() -> None:
    key = Key()
    facts = key.facts
    key.record(facts.bound("s1", "claude", "c1"), facts.bound("s1", "codex", "x1"))
    key.record(facts.bound("s1", "claude", "c2"), facts.unbound("s1", "codex"))
    key.record(facts.overridden("s1", model="m", thinking="high"))
    key.record(facts.overridden("s1", thinking=None, verbose=True))
    generation = key.generation("s1")
    assert generation.bindings == {"claude": "c2"}
    assert generation.overrides == {"model": "m", "verbose": True}


# -- invariant 12: transcript integrity --------------------------------------------------------


def test_entry_rows_carry_their_place_in_the_generations_hash_chain() -> None:
    """Invariant 12, transcript integrity (docs/invariants.md): the rows hold the chain
    the events carry, and the generation row its head and length."""
    key = Key()
    facts = key.facts
    appended = [
        facts.appended("s1", "m1", role="user"),
        facts.appended("s1", "m2", parent="m1"),
    ]
    key.record(*appended)
    key.reset("idle", new="s2")
    key.record(facts.appended("s2", "m1"))
    rows = key.rows()
    entries = sorted(rows["entries"].values(), key=lambda e: (e.session_id, e.seq))
    head = GENESIS_HASH
    for row, fact in zip(entries[:2], appended, strict=True):
        assert (row.session_id, row.entry_id, row.parent_id) == (
            "s1",
            fact.entry.id,
            fact.entry.parent_id,
        )
        assert row.entry_hash == chain_hash(head, fact.entry.digest())
        head = row.entry_hash
    generation = rows["generations"]["s1"]
    assert (generation.entry_count, generation.head_hash) == (2, head)
    (first_of_s2,) = entries[2:]
    assert (first_of_s2.seq, first_of_s2.entry_hash) == (
        1,
        chain_hash(GENESIS_HASH, facts.appended("s2", "m1").entry.digest()),
    )


def test_pruning_drops_the_entry_rows_but_keeps_the_chain_head() -> None:
    """Invariant 12 (docs/invariants.md): the log keeps a pruned generation's transcript,
    so its row keeps the head hash and count that `verify` checks against it."""
    key = Key()
    key.record(key.facts.appended("s1", "m1"), key.facts.appended("s1", "m2", parent="m1"))
    key.reset(new="s2")
    key.record(key.facts.appended("s2", "m1"))
    before = key.generation("s1")
    assert key.conversation.prune("s1", at=T0, reason="old") == ""
    key.log.take(key.conversation)
    rows = key.rows()
    after = rows["generations"]["s1"]
    assert after.pruned_at is not None
    assert (after.entry_count, after.head_hash, after.late_events) == (
        before.entry_count,
        before.head_hash,
        0,
    )
    assert {entry.session_id for entry in rows["entries"].values()} == {"s2"}


# -- what the fold refuses ---------------------------------------------------------------------


def test_an_event_of_a_generation_the_rows_never_saw_is_refused() -> None:
    """The fold applies an event to its own generation's row; without that row it
    cannot, and says so rather than invent one."""
    key = Key()
    key.record(key.facts.started("s1", "r1"))
    orphan = key.log.events[1:]
    with pytest.raises(LookupError):
        replay(enumerate(orphan, start=2))


def test_the_end_of_a_run_the_rows_never_saw_is_refused() -> None:
    key = Key()
    key.record(key.facts.started("s1", "r1"), key.facts.ended("s1", "r1"))
    opening, _, end = key.log.events
    with pytest.raises(LookupError):
        replay([(1, opening), (3, end)])


# -- properties over drawn gateway traffic ------------------------------------------------------


def traffic_log(script: list[tuple[Any, ...]]) -> list[tuple[int, LedgerEvent]]:
    traffic = Traffic()
    for command in script:
        traffic.play(command)
    log = Log()
    log.take(traffic.conversation)
    return log.positioned()


class Loaded:
    """A RowLoader over rows folded earlier: the fold resumed from stored rows."""

    def __init__(self, rows: RowsByTable) -> None:
        self.stored = rows

    def load_sessions(self, keys: Iterable[str]) -> dict[str, SessionRow]:
        return {k: self.stored["sessions"][k] for k in keys if k in self.stored["sessions"]}

    def load_generations(self, session_ids: Iterable[str]) -> dict[str, GenerationRow]:
        found = self.stored["generations"]
        return {s: found[s] for s in session_ids if s in found}

    def load_runs(self, run_ids: Iterable[str]) -> dict[str, RunRow]:
        return {r: self.stored["runs"][r] for r in run_ids if r in self.stored["runs"]}


def resumed_rows(first: RowsByTable, resumed: RowSet) -> RowsByTable:
    """The rows stored after a fold that loaded `first` wrote what it changed: its rows
    over the stored ones, deleted keys gone, pruned generations' entries gone."""
    then = replayed_rows(resumed)
    result = {table: {**first[table], **then[table]} for table in first}
    for key, row in resumed.sessions.rows.items():
        if row is None:
            result["sessions"].pop(key, None)
    pruned = set(resumed.pruned)
    result["entries"] = {
        k: e
        for k, e in result["entries"].items()
        if e.session_id not in pruned or k in then["entries"]
    }
    return result


@settings(max_examples=200, deadline=None)
@given(st.lists(TRAFFIC, min_size=5, max_size=40), st.data())
def test_folding_the_same_log_again_gives_the_same_rows(
    script: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    """Invariant 3, replay equals live (docs/invariants.md), as a pure property: a fresh
    fold of the same events gives the same rows, and so does a fold that stopped part
    way and resumed from the rows it had written (what the live projector does)."""
    log = traffic_log(script)
    once = replayed_rows(replay(log))
    assert replayed_rows(replay(log)) == once
    cut = data.draw(st.integers(0, len(log)))
    first = replayed_rows(replay(log[:cut]))
    resumed = RowSet(Loaded(first))
    for position, event in log[cut:]:
        resumed.apply(event, position)
    assert resumed_rows(first, resumed) == once


def generation_is_possible(row: GenerationRow, runs: dict[str, RunRow]) -> None:
    """Invariant 2, no impossible rows (docs/invariants.md), for one generation row."""
    assert (row.status == "running") == row.has_active_run == bool(row.active_run_ids)
    for run_id in row.active_run_ids:
        assert runs[run_id].status == "running" and runs[run_id].ended_at is None
    if row.status == "running":
        assert row.ended_at is None and row.runtime_ms is None and row.started_at is not None
    elif row.status != "new":
        assert row.ended_at is not None and row.started_at is not None
        assert row.runtime_ms == ms(row.ended_at - row.started_at) >= 0
    else:
        assert row.last_run_id is None


@settings(max_examples=200, deadline=None)
@given(st.lists(TRAFFIC, min_size=5, max_size=40))
def test_every_row_is_possible_after_every_event(script: list[tuple[Any, ...]]) -> None:
    """Invariant 2, no impossible rows (docs/invariants.md): after each event, every
    generation and run row describes something that can be."""
    rows = RowSet()
    for position, event in traffic_log(script):
        rows.apply(event, position)
        runs = {k: r for k, r in rows.runs.rows.items() if r is not None}
        for run in runs.values():
            assert (run.status == "running") == (run.ended_at is None) == (run.runtime_ms is None)
            if run.ended_at is not None:
                assert run.runtime_ms == ms(run.ended_at - run.started_at) >= 0
        for generation in rows.generations.rows.values():
            assert generation is not None
            generation_is_possible(generation, runs)


@settings(max_examples=200, deadline=None)
@given(st.lists(TRAFFIC, min_size=5, max_size=40))
def test_no_event_of_another_generation_touches_the_current_row(
    script: list[tuple[Any, ...]],
) -> None:
    """Invariant 1, generation fence, and invariant 8, no resurrection
    (docs/invariants.md): an event changes the generation row of its own sessionId and
    no other; only an opening moves the key's pointer, only a deletion removes it."""
    rows = RowSet()
    for position, event in traffic_log(script):
        before = replayed_rows(rows)
        rows.apply(event, position)
        after = replayed_rows(rows)
        changed = {
            sid
            for sid, row in after["generations"].items()
            if before["generations"].get(sid) != row
        }
        assert changed == {event.session_id}, event.type
        if event.type == "generation.opened":
            assert after["sessions"][KEY].session_id == event.session_id
        elif event.type == "session.deleted":
            assert KEY in before["sessions"] and KEY not in after["sessions"]
        else:
            assert after["sessions"] == before["sessions"], event.type


@settings(max_examples=200, deadline=None)
@given(st.lists(TRAFFIC, min_size=5, max_size=40))
def test_rows_agree_with_a_count_over_the_log(script: list[tuple[Any, ...]]) -> None:
    """Invariants 4 (exactly once), 9 (resumable only with a transcript) and 12
    (transcript integrity) (docs/invariants.md), against a direct count over the log."""
    log = traffic_log(script)
    rows = replayed_rows(replay(log))
    late: dict[str, int] = {}
    current: str | None = None
    tokens: dict[str, int] = {}
    assistant: set[str] = set()
    chain: dict[str, list[TranscriptAppended]] = {}
    pruned: set[str] = set()
    for _, event in log:
        sid = event.session_id
        if event.type == "generation.opened":
            current = sid
        elif event.type in ("session.rotated", "session.deleted"):
            current = None
        elif event.type != "generation.pruned" and sid != current:
            late[sid] = late.get(sid, 0) + 1
        if event.type in ("run.ended", "run.errored"):
            tokens[sid] = tokens.get(sid, 0) + event.usage.input  # type: ignore[union-attr]
        if isinstance(event, TranscriptAppended):
            chain.setdefault(sid, []).append(event)
            if event.entry.role == "assistant":
                assistant.add(sid)
        if event.type == "generation.pruned":
            pruned.add(sid)
    assert sorted(rows["receipts"]) == sorted(event.event_id for _, event in log)
    for sid, generation in rows["generations"].items():
        assert generation.late_events == late.get(sid, 0)
        assert generation.input_tokens == tokens.get(sid, 0)
        assert generation.resumable == (sid in assistant)
        appended = chain.get(sid, [])
        assert generation.entry_count == len(appended)
        assert generation.head_hash == (appended[-1].entry_hash if appended else GENESIS_HASH)
        stored = sorted(
            (e for e in rows["entries"].values() if e.session_id == sid), key=lambda e: e.seq
        )
        if sid in pruned:
            assert stored == []
            continue
        head = GENESIS_HASH
        for seq, (row, event) in enumerate(zip(stored, appended, strict=True), start=1):
            assert row.seq == seq and row.entry_id == event.entry.id
            assert row.entry_hash == chain_hash(head, event.entry.digest())
            assert row.parent_id is None or row.parent_id in {e.entry_id for e in stored[: seq - 1]}
            head = row.entry_hash
