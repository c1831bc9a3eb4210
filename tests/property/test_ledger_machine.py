"""A stateful property test of the Ledger against a small model (docs/invariants.md:
invariants 1-4 and 6-12).

The machine drives a real Ledger (a SQLite file; a smaller profile on PostgreSQL) with
gateway traffic: resolves by user and machine writers under random freshness policies,
runs that start, end and error (late, on archived generations, with skewed clocks),
transcript appends by co-tenant writers, resets and deletes with compare-and-swap,
bindings, overrides and retried eventIds. The model predicts every outcome and how many
events each command logs; invariants are checked against the stored rows after every step.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sessionledger.domain.errors import InvalidEvent, SessionChanged, SessionDeleted, UnknownSession
from sessionledger.domain.events import TranscriptAppended, TranscriptEntry, chain_hash
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.infrastructure.ledger import Ledger, RecordResult
from sessionledger.projections.rows import GenerationRow, SessionView
from tests.helpers import assert_replay_equals_live
from tests.property.oracles import T0, expected_expiry, policies

KEYS = ("agent:main:telegram:direct:4242", "cron:nightly-digest")
WRITERS = ("runner", "heartbeat", "cron", "ingress", "admin", "system")
ROLES = ("user", "assistant", "toolResult", "bashExecution", "system", "custom")
TERMINAL = ("done", "killed", "timeout", "interrupted")
REPLAY_EVERY = 10  # steps between full replay = live comparisons


def ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


# -- the model ------------------------------------------------------------------------


@dataclass
class MRun:
    run_id: str
    key: str
    sid: str
    trigger: str
    started_at: datetime
    status: str = "running"
    ended_at: datetime | None = None
    error: str | None = None
    late: bool = False
    usage: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class MGen:
    sid: str
    key: str
    previous: str | None
    opened_at: datetime
    open_reason: str
    state: str = "current"
    next_sid: str | None = None
    bindings: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    active: list[str] = field(default_factory=list)  # run ids in start order
    focus: str | None = None
    entries: dict[str, TranscriptEntry] = field(default_factory=dict)  # in append order
    last_user_at: datetime | None = None
    late_events: int = 0
    tokens: tuple[int, int, int, int] = (0, 0, 0, 0)
    model: str | None = None


@dataclass
class MKey:
    key: str
    current: str | None
    lineage: list[str] = field(default_factory=list)  # every sid of the key, opening order
    deleted: str | None = None  # the generation the key's last deletion tombstoned


@dataclass
class Sent:
    """An eventId the store recorded, with the answer a retry must repeat."""

    fact: dict[str, Any]
    result: RecordResult


class LedgerMachine(RuleBasedStateMachine):
    """Set `open_url` before running (a factory for one fresh database per example)."""

    open_url: Callable[[], str] = staticmethod(lambda: "")

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger.open(type(self).open_url())
        self.now = T0
        self.keys: dict[str, MKey] = {}
        self.gens: dict[str, MGen] = {}
        self.runs: dict[str, MRun] = {}
        self.sent: dict[str, Sent] = {}
        self.log_size = 0
        self.steps = 0
        self.counter = 0

    def teardown(self) -> None:
        if os.environ.get("MACHINE_STATS"):
            print(
                "steps",
                self.steps,
                "log",
                self.log_size,
                "gens",
                len(self.gens),
                "runs",
                len(self.runs),
                "entries",
                sum(len(g.entries) for g in self.gens.values()),
                "sent",
                len(self.sent),
            )
        try:
            assert_replay_equals_live(self.ledger)  # Invariant 3
        finally:
            self.ledger.close()

    # -- helpers -------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def live_keys(self) -> list[str]:
        return [k for k, m in self.keys.items() if m.current is not None]

    def all_sids(self) -> list[str]:
        return list(self.gens)

    def fact(
        self, kind: str, sid: str, writer: str, skew: int = 0, **fields: Any
    ) -> dict[str, Any]:
        gen = self.gens[sid]
        return {
            "type": kind,
            "eventId": self.fresh("e"),
            "sessionKey": gen.key,
            "sessionId": sid,
            "occurredAt": (self.now + timedelta(seconds=skew)).isoformat(),
            "writer": writer,
            **fields,
        }

    def actual_log_size(self) -> int:
        size, after = 0, 0
        while page := self.ledger.log(after=after, limit=1000):
            size += len(page)
            after = page[-1][0]
        return size

    def expect_logged(self, added: int) -> None:
        # Invariant 4, exactly once: each command logs exactly the events the model predicts.
        self.log_size += added
        assert self.actual_log_size() == self.log_size

    def row(self, key: str) -> SessionView | None:
        """The key's current row; None for a deleted key (which must be answered
        SessionDeleted, naming the generation its deletion tombstoned) or one never opened."""
        model = self.keys.get(key)
        try:
            return self.ledger.session(key)
        except SessionDeleted as error:
            # Invariant 8: a deleted key stays deleted, never "unknown", whatever arrived late.
            assert model is not None and model.current is None, key
            assert error.session_id == model.deleted, (key, error.session_id, model.deleted)
            return None
        except UnknownSession:
            assert model is None, key
            return None

    def submit(self, facts: list[dict[str, Any]]) -> list[RecordResult]:
        """Record a batch; compare each answer with the model's prediction (applied in order)."""
        rows_before = {k: self.row(k) for k in self.keys}
        predictions: list[tuple[str, str | None]] = []
        changing: set[str] = set()
        logged = 0
        seen_in_batch: dict[str, int] = {}
        for index, fact in enumerate(facts):
            if fact["eventId"] in seen_in_batch:
                predictions.append(predictions[seen_in_batch[fact["eventId"]]])
                continue
            seen_in_batch[fact["eventId"]] = index
            outcome = self.predict_and_apply(fact)
            predictions.append(outcome)
            logged += outcome[0] in ("applied", "archived") and fact["eventId"] not in self.sent
        results = self.ledger.record(facts)
        assert len(results) == len(facts)
        for fact, result, (outcome, current) in zip(facts, results, predictions, strict=True):
            assert result.event_id == fact["eventId"]
            assert result.outcome == outcome, (fact, result)
            known = self.sent.get(fact["eventId"])
            if known is not None and known.fact != fact:
                known = None  # a reused eventId with other content: rejected above
            if known is not None:
                # Invariant 4: a retried eventId answers as the first time did, same position.
                assert (result.outcome, result.position) == (
                    known.result.outcome,
                    known.result.position,
                )
                assert result.current_session_id == known.result.current_session_id
                continue
            if outcome in ("applied", "archived"):
                assert result.position is not None
                # Invariant 6: the answer names the key's current sessionId (None once deleted).
                assert result.current_session_id == current, (fact, result)
                assert result.session_id == fact["sessionId"]
                self.sent[fact["eventId"]] = Sent(fact, result)
            else:
                assert result.position is None
            if outcome == "applied":
                changing.add(fact["sessionKey"])
        self.expect_logged(logged)
        # Invariants 1 (fence), 8 (no resurrection), 4 (retries are no-ops): unless a
        # new event applied to its current generation, a key's current row is exactly as it
        # was (archived, duplicate and rejected events never touch it).
        for key, before in rows_before.items():
            if key not in changing:
                assert self.row(key) == before, key
        return results

    def predict_and_apply(self, fact: dict[str, Any]) -> tuple[str, str | None]:
        """The model's outcome for one fact (and the key's current sessionId after it)."""
        key = self.keys.get(fact["sessionKey"])
        if fact["eventId"] in self.sent:
            known = self.sent[fact["eventId"]]
            if known.fact == fact:
                return known.result.outcome, known.result.current_session_id
            return "rejected", None
        if key is None:
            return "rejected", None
        gen = self.gens.get(fact["sessionId"])
        if gen is None or gen.key != key.key:
            return "rejected", key.current
        kind = fact["type"]
        current = key.current == gen.sid
        occurred = datetime.fromisoformat(fact["occurredAt"]).astimezone(UTC)
        if kind == "run.started":
            if fact["runId"] in self.runs:
                return "rejected", key.current
            run = MRun(fact["runId"], key.key, gen.sid, fact["trigger"], occurred, late=not current)
            self.runs[run.run_id] = run
            gen.active.append(run.run_id)
            gen.focus = run.run_id
            gen.model = fact.get("model") or gen.model
            if fact["trigger"] == "user":
                gen.last_user_at = max(filter(None, (gen.last_user_at, occurred)))
        elif kind in ("run.ended", "run.errored"):
            run = self.runs.get(fact["runId"])
            if run is None or run.sid != gen.sid or run.status != "running":
                return "rejected", key.current
            run.status = fact.get("outcome", "failed")
            run.error = fact.get("error")
            # Invariant 1: identity decides, a skewed end is clamped to the start, never dropped.
            run.ended_at = max(occurred, run.started_at)
            run.late = run.late or not current
            u = fact.get("usage", {})
            run.usage = (u.get("input", 0), u.get("output", 0), 0, 0)
            gen.tokens = tuple(a + b for a, b in zip(gen.tokens, run.usage, strict=True))  # type: ignore[assignment]
            gen.active.remove(run.run_id)
            gen.focus = gen.active[-1] if gen.active else run.run_id
        elif kind == "transcript.appended":
            entry = TranscriptEntry.model_validate(fact["entry"])
            known_entry = gen.entries.get(entry.id)
            if known_entry is not None:
                return ("duplicate" if known_entry == entry else "rejected"), key.current
            if entry.parent_id is not None and entry.parent_id not in gen.entries:
                return "rejected", key.current
            gen.entries[entry.id] = entry
            if fact["writer"] == "ingress":
                gen.last_user_at = max(filter(None, (gen.last_user_at, occurred)))
        elif kind == "binding.set":
            gen.bindings[fact["provider"]] = fact["cliSessionId"]
        elif kind == "binding.dropped":
            if fact["provider"] not in gen.bindings:
                return "rejected", key.current
            del gen.bindings[fact["provider"]]
        elif kind == "overrides.changed":
            for name, value in fact["overrides"].items():
                if value is None:
                    gen.overrides.pop(name, None)
                else:
                    gen.overrides[name] = value
        if not current:
            gen.late_events += 1
        return ("applied" if current else "archived"), key.current

    def open_generation(
        self, key: str, sid: str, reason: str, previous: MGen | None, soft: bool
    ) -> None:
        if previous is not None:
            previous.state = "archived"
            previous.next_sid = sid
        gen = MGen(sid, key, previous.sid if previous else None, self.now, reason)
        if soft and previous is not None:
            gen.bindings = dict(previous.bindings)
            gen.overrides = dict(previous.overrides)
        self.gens[sid] = gen
        model = self.keys.setdefault(key, MKey(key, None))
        model.current = sid
        model.lineage.append(sid)

    def pick_run(self, data: st.DataObject, running: bool) -> MRun | None:
        runs = [r for r in self.runs.values() if (r.status == "running") == running]
        return data.draw(st.sampled_from(runs)) if runs else None

    # -- rules: the gateway --------------------------------------------------------------

    @initialize()
    def open_keys(self) -> None:
        for key in KEYS:
            self.resolve(key, "user", 0, FreshnessPolicy())

    @rule(
        key=st.sampled_from(KEYS),
        interaction=st.sampled_from(["user", "user", "heartbeat", "cron", "system"]),
        advance=st.sampled_from([0, 30, 600, 3600, 4 * 3600, 86400, 3 * 86400]),
        policy=policies(),
    )
    def resolve(self, key: str, interaction: str, advance: int, policy: FreshnessPolicy) -> None:
        self.now += timedelta(seconds=advance)
        model = self.keys.get(key)
        before = self.row(key)
        if model is not None and model.current is None and interaction != "user":
            # Invariant 8: machine traffic never reopens a deleted key.
            with pytest.raises(SessionDeleted):
                self.ledger.resolve(key, at=self.now, interaction=interaction, policy=policy)  # type: ignore[arg-type]
            self.expect_logged(0)
            assert self.row(key) is None
            return
        result = self.ledger.resolve(key, at=self.now, interaction=interaction, policy=policy)  # type: ignore[arg-type]
        sid = result.session.session_id
        if model is None or model.current is None:
            # New key, or a user explicitly starting over on a deleted key (design decision
            # of the current code: a new lineage, no link to the deleted generation).
            assert result.rotated == (model is not None)
            assert result.reason == "new"
            assert result.previous_session_id is None
            self.open_generation(key, sid, "new", None, soft=False)
            added = 1
        else:
            gen = self.gens[model.current]
            expected = None
            if interaction == "user":
                expected = expected_expiry(
                    policy,
                    opened_at=gen.opened_at,
                    last_user_interaction_at=gen.last_user_at,
                    now=self.now,
                )
            # Invariant 11: only the right clock rotates; heartbeat/cron/system never do.
            assert (result.rotated, result.reason) == (expected is not None, expected)
            added = 0
            if expected is not None:
                assert result.previous_session_id == gen.sid != sid
                self.open_generation(key, sid, expected, gen, soft=expected == "idle")
                added = 2
            else:
                assert sid == gen.sid
                if interaction != "user":
                    # Invariant 11: machine traffic leaves the row, freshness included, untouched.
                    assert self.row(key) == before
        if interaction == "user":
            gen = self.gens[sid]
            gen.last_user_at = max(filter(None, (gen.last_user_at, self.now)))
            added += 1
        self.expect_logged(added)

    @rule(advance=st.sampled_from([1, 59, 600, 1800, 3600, 7200]))
    def tick(self, advance: int) -> None:
        """Time passes between messages (machine writers report in between)."""
        self.now += timedelta(seconds=advance)

    @rule(
        data=st.data(),
        trigger=st.sampled_from(["user", "heartbeat", "cron", "system", "subagent"]),
        writer=st.sampled_from(WRITERS),
        skew=st.sampled_from([0, 0, -7200, -5, 5, 7200]),
        where=st.sampled_from(["current", "current", "any"]),
    )
    def start_run(
        self, data: st.DataObject, trigger: str, writer: str, skew: int, where: str
    ) -> None:
        sids = (
            [self.keys[k].current for k in self.live_keys()]
            if where == "current"
            else self.all_sids()
        )
        if not sids:
            return
        sid = data.draw(st.sampled_from(sids))
        assert sid is not None
        model = data.draw(st.sampled_from([None, "gpt-5", "claude"]))
        run_id = self.fresh("r")
        self.submit(
            [
                self.fact(
                    "run.started", sid, writer, skew, runId=run_id, trigger=trigger, model=model
                )
            ]
        )

    @rule(data=st.data())
    def restart_a_known_run(self, data: st.DataObject) -> None:
        # A runId is started once, ever, across the lineage: a second start is rejected.
        if not self.runs:
            return
        run = data.draw(st.sampled_from(list(self.runs.values())))
        sid = data.draw(st.sampled_from(self.all_sids()))
        self.submit([self.fact("run.started", sid, "runner", runId=run.run_id, trigger="user")])

    @rule(
        data=st.data(),
        errored=st.booleans(),
        outcome=st.sampled_from(TERMINAL),
        skew=st.sampled_from([0, 1, 90, -86400, -1, 3600]),
        tokens=st.tuples(st.integers(0, 5000), st.integers(0, 5000)),
        wrong_generation=st.booleans(),
    )
    def finish_run(
        self,
        data: st.DataObject,
        errored: bool,
        outcome: str,
        skew: int,
        tokens: tuple[int, int],
        wrong_generation: bool,
    ) -> None:
        run = self.pick_run(data, running=data.draw(st.sampled_from([True, True, True, False])))
        if run is None:
            return
        sid = run.sid
        if wrong_generation:
            sid = data.draw(st.sampled_from(self.all_sids()))
        usage = {"input": tokens[0], "output": tokens[1]}
        if errored:
            fact = self.fact(
                "run.errored", sid, "runner", skew, runId=run.run_id, error="boom", usage=usage
            )
        else:
            fact = self.fact(
                "run.ended", sid, "runner", skew, runId=run.run_id, outcome=outcome, usage=usage
            )
        self.submit([fact])

    @rule(
        data=st.data(),
        writers=st.lists(st.sampled_from(WRITERS), min_size=1, max_size=4),
        roles=st.lists(st.sampled_from(ROLES), min_size=4, max_size=4),
        parent=st.sampled_from(["last", "none", "any", "bogus", "other-generation"]),
        reuse=st.sampled_from(["fresh", "fresh", "fresh", "same", "different"]),
        where=st.sampled_from(["current", "current", "any"]),
        offset=st.sampled_from([0, 0, 60, -90, 330]),
    )
    def append(
        self,
        data: st.DataObject,
        writers: list[str],
        roles: list[str],
        parent: str,
        reuse: str,
        where: str,
        offset: int,
    ) -> None:
        """Co-tenant writers append to one generation in one batch (invariants 6 and 12)."""
        sids = (
            [self.keys[k].current for k in self.live_keys()]
            if where == "current"
            else self.all_sids()
        )
        if not sids:
            return
        sid = data.draw(st.sampled_from(sids))
        assert sid is not None
        gen = self.gens[sid]
        facts: list[dict[str, Any]] = []
        last = next(reversed(gen.entries), None) if gen.entries else None
        for writer, role in zip(writers, roles, strict=False):
            if parent == "last":
                parent_id = last
            elif parent == "none":
                parent_id = None
            elif parent == "any":
                parent_id = data.draw(st.sampled_from([None, *gen.entries]))
            elif parent == "bogus":
                parent_id = "no-such-entry"
            else:
                others = [e for g in self.gens.values() if g.sid != sid for e in g.entries]
                parent_id = data.draw(st.sampled_from(others)) if others else "no-such-entry"
            stamp = self.now.astimezone(UTC) + timedelta(minutes=offset)
            entry_id = self.fresh("m")
            content: Any = {"text": f"{role} says {entry_id}", "n": len(facts)}
            if reuse != "fresh" and gen.entries:
                old = data.draw(st.sampled_from(list(gen.entries.values())))
                entry_id, parent_id, role = old.id, old.parent_id, old.role
                stamp, content = old.timestamp, old.content
                if reuse == "different":
                    content = {"text": "edited", "was": old.content}
            entry = {
                "id": entry_id,
                "parentId": parent_id,
                "role": role,
                "content": content,
                "timestamp": stamp.isoformat(),
            }
            facts.append(self.fact("transcript.appended", sid, writer, entry=entry))
            last = entry_id
        was_current = self.keys[gen.key].current == sid
        results = self.submit(facts)
        if was_current and parent in ("last", "none") and reuse == "fresh":
            # Invariant 6: co-tenants on the current generation never collide.
            assert [r.outcome for r in results] == ["applied"] * len(results)

    @rule(data=st.data(), kind=st.sampled_from(["set", "drop", "overrides", "record-set"]))
    def bindings_and_overrides(self, data: st.DataObject, kind: str) -> None:
        if not self.keys:
            return
        key = data.draw(st.sampled_from(list(self.keys)))
        model = self.keys[key]
        provider = data.draw(st.sampled_from(["claude-cli", "codex"]))
        if kind in ("set", "drop"):
            if model.current is None:
                with pytest.raises(SessionDeleted):
                    if kind == "set":
                        self.ledger.set_binding(key, provider, "cli-x", at=self.now)
                    else:
                        self.ledger.drop_binding(key, provider, at=self.now)
                self.expect_logged(0)
                return
            gen = self.gens[model.current]
            if kind == "drop" and provider not in gen.bindings:
                with pytest.raises(InvalidEvent):
                    self.ledger.drop_binding(key, provider, at=self.now)
                self.expect_logged(0)
                return
            if kind == "set":
                cli = self.fresh("cli")
                result = self.ledger.set_binding(key, provider, cli, at=self.now)
                gen.bindings[provider] = cli
            else:
                result = self.ledger.drop_binding(key, provider, at=self.now)
                del gen.bindings[provider]
            assert (result.outcome, result.current_session_id) == ("applied", gen.sid)
            self.expect_logged(1)
            return
        sid = data.draw(st.sampled_from(model.lineage))
        if kind == "overrides":
            overrides = data.draw(
                st.dictionaries(
                    st.sampled_from(["model", "thinking", "verbose"]),
                    st.one_of(st.none(), st.sampled_from(["high", "low", "gpt-5"]), st.booleans()),
                    min_size=1,
                )
            )
            self.submit([self.fact("overrides.changed", sid, "admin", overrides=overrides)])
        else:
            fact = self.fact("binding.set", sid, "runner", provider=provider, cliSessionId="c1")
            self.submit([fact])

    # -- rules: the operator -----------------------------------------------------------

    @rule(
        data=st.data(),
        reason=st.sampled_from(["reset", "new", "daily", "admin", "idle"]),
        expect=st.sampled_from(["right", "wrong", "none"]),
        reuse_id=st.booleans(),
    )
    def reset(self, data: st.DataObject, reason: str, expect: str, reuse_id: bool) -> None:
        if not self.keys:
            return
        key = data.draw(st.sampled_from(list(self.keys)))
        model = self.keys[key]
        expected = {"right": model.current, "wrong": "stale-id", "none": None}[expect]
        new_sid = data.draw(st.sampled_from(self.all_sids())) if reuse_id else None
        before = self.row(key)
        if new_sid is not None:
            # sessionIds are never reused (checked before anything else).
            with pytest.raises(InvalidEvent):
                self.ledger.reset(key, reason=reason, session_id=new_sid, at=self.now)  # type: ignore[arg-type]
        elif model.current is None:
            with pytest.raises(SessionDeleted):
                self.ledger.reset(key, reason=reason, expected_session_id=expected, at=self.now)  # type: ignore[arg-type]
        elif expect == "wrong":
            # Invariant 7: a CAS mismatch is a conflict naming the current sessionId.
            with pytest.raises(SessionChanged) as raised:
                self.ledger.reset(key, reason=reason, expected_session_id=expected, at=self.now)  # type: ignore[arg-type]
            assert raised.value.current_session_id == model.current
        else:
            old = self.gens[model.current]
            result = self.ledger.reset(
                key,
                reason=reason,  # type: ignore[arg-type]
                expected_session_id=expected,
                at=self.now,
            )
            assert result.previous_session_id == old.sid != result.session_id
            self.open_generation(key, result.session_id, reason, old, soft=reason == "idle")
            self.expect_logged(2)
            return
        self.expect_logged(0)  # Invariant 7: never a silent success
        assert self.row(key) == before

    @rule(data=st.data(), expect=st.sampled_from(["right", "wrong", "none"]))
    def delete(self, data: st.DataObject, expect: str) -> None:
        if not self.keys:
            return
        key = data.draw(st.sampled_from(list(self.keys)))
        model = self.keys[key]
        expected = {"right": model.current, "wrong": "stale-id", "none": None}[expect]
        before = self.row(key)
        if model.current is None:
            with pytest.raises(SessionDeleted):
                self.ledger.delete(key, expected_session_id=expected, at=self.now)
        elif expect == "wrong":
            with pytest.raises(SessionChanged) as raised:  # Invariant 7
                self.ledger.delete(key, expected_session_id=expected, at=self.now)
            assert raised.value.current_session_id == model.current
        else:
            assert self.ledger.delete(key, expected_session_id=expected, at=self.now) == (
                model.current
            )
            self.gens[model.current].state = "deleted"
            model.deleted, model.current = model.current, None
            self.expect_logged(1)
            return
        self.expect_logged(0)
        assert self.row(key) == before

    # -- rules: retries ------------------------------------------------------------------

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), mode=st.sampled_from(["same", "same", "changed", "twice-in-batch"]))
    def retry(self, data: st.DataObject, mode: str) -> None:
        """Invariant 4, exactly once: a retried eventId is a no-op answering the original
        outcome and position."""
        sent = data.draw(st.sampled_from(list(self.sent.values())))
        fact = dict(sent.fact)
        if mode == "changed":
            fact["writer"] = "admin" if fact["writer"] != "admin" else "system"
            (result,) = self.submit([fact])
            assert result.outcome == "rejected"
            assert result.reason is not None and "eventId" in result.reason
        elif mode == "twice-in-batch":
            first, second = self.submit([fact, fact])
            assert first.position == second.position == sent.result.position
        else:
            (result,) = self.submit([fact])
            assert result.position == sent.result.position

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def retry_several(self, data: st.DataObject) -> None:
        """Invariant 4 for a batch of retries, some changed: each is told apart from a reused
        eventId by the event logged at its own position (runs of positions and gaps)."""
        sent = data.draw(
            st.lists(st.sampled_from(list(self.sent.values())), min_size=2, max_size=8)
        )
        changed = data.draw(st.lists(st.booleans(), min_size=len(sent), max_size=len(sent)))
        facts = [dict(s.fact) for s in sent]
        for fact, change in zip(facts, changed, strict=True):
            if change:
                fact["writer"] = "admin" if fact["writer"] != "admin" else "system"
        results = self.ledger.record(facts)
        # Every eventId here was recorded before, so each occurrence (a repeat within
        # the batch too) is judged against the logged event on its own.
        for one, fact, result in zip(sent, facts, results, strict=True):
            if fact != one.fact:
                assert result.outcome == "rejected", (fact, result)
            else:
                assert (result.outcome, result.position) == (
                    one.result.outcome,
                    one.result.position,
                ), (fact, result)
        self.expect_logged(0)

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data())
    def fresh_duplicate_in_one_batch(self, data: st.DataObject) -> None:
        # A new eventId twice in one batch is recorded once; both answers agree.
        sid = data.draw(st.sampled_from(self.all_sids()))
        fact = self.fact("overrides.changed", sid, "admin", overrides={"verbose": True})
        first, second = self.submit([fact, fact])
        assert (first.outcome, first.position) == (second.outcome, second.position)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def rows_match_the_model(self) -> None:
        self.steps += 1
        listed = {v.session_key: v for v in self.ledger.sessions(limit=1000).items}
        for key, model in self.keys.items():
            view = self.row(key)
            if model.current is None:
                # Invariant 8, no resurrection: a deleted key has no row, whatever arrived
                # late (row() holds the answer to SessionDeleted naming the dead generation).
                assert view is None and key not in listed
            else:
                # Invariant 1: the current row is the current generation's, field for field.
                assert view is not None and view.session_id == model.current
                assert listed[key] == view
                self.check_generation_row(view, self.gens[model.current])
            generations = self.ledger.generations(key)
            # Invariant 10: every generation of the key stays reachable, in opening order.
            assert [g.session_id for g in generations] == model.lineage
            for row in generations:
                self.check_generation_row(row, self.gens[row.session_id])

    def check_generation_row(self, row: GenerationRow | SessionView, gen: MGen) -> None:
        focus = self.runs[gen.focus] if gen.focus else None
        # Invariant 2, no impossible rows: running <=> active run <=> hasActiveRun <=> endedAt null.
        assert (row.status == "running") == row.has_active_run == bool(row.active_run_ids)
        if row.status == "running":
            assert row.ended_at is None and row.runtime_ms is None and row.started_at is not None
        elif row.status != "new":
            assert row.ended_at is not None and row.started_at is not None
            assert row.runtime_ms == ms(row.ended_at - row.started_at) >= 0
        # Invariant 1: the model applies every event to its own generation only.
        assert list(row.active_run_ids) == gen.active
        assert row.status == (focus.status if focus else "new")
        assert row.last_run_id == gen.focus
        assert row.last_error == (focus.error if focus else None)
        assert (row.input_tokens, row.output_tokens) == gen.tokens[:2]
        assert row.entry_count == len(gen.entries)
        assert row.bindings == gen.bindings and row.overrides == gen.overrides
        assert row.model == gen.model
        # Invariant 11: freshness follows user/ingress interactions only.
        assert row.last_interaction_at == gen.last_user_at
        # Invariant 9: resumable only once the generation holds an assistant entry.
        assert row.resumable == any(e.role == "assistant" for e in gen.entries.values())
        # Invariant 10: the lineage link.
        assert row.previous_session_id == gen.previous
        if isinstance(row, GenerationRow):
            assert row.state == gen.state and row.next_session_id == gen.next_sid
            assert row.late_events == gen.late_events
            assert row.open_reason == gen.open_reason

    @invariant()
    def runs_are_possible(self) -> None:
        # Invariant 2 for run rows; invariant 1: a skewed terminal event is applied,
        # clamped to the start.
        for sid in {r.sid for r in self.runs.values()}:
            for row in self.ledger.runs(sid):
                run = self.runs[row.run_id]
                assert row.status == run.status and row.session_id == run.sid
                assert (row.status == "running") == (row.ended_at is None)
                assert row.ended_at == run.ended_at and row.late == run.late
                if row.ended_at is not None:
                    assert row.runtime_ms == ms(row.ended_at - row.started_at) >= 0
                assert (row.input_tokens, row.output_tokens) == run.usage[:2]

    @invariant()
    def transcripts_are_chained_and_reachable(self) -> None:
        for key, model in self.keys.items():
            for sid in model.lineage:
                entries = self.ledger.transcript(key, session_id=sid)
                gen = self.gens[sid]
                # Invariant 12: unique ids, parents in the same generation, an intact hash chain.
                assert [e.entry_id for e in entries] == list(gen.entries)
                head = ""
                for seq, e in enumerate(entries, start=1):
                    assert e.seq == seq and e.prev_hash == head
                    seen = [x.entry_id for x in entries[: seq - 1]]
                    assert e.parent_id is None or e.parent_id in seen
                    original = gen.entries[e.entry_id]
                    assert e.entry_hash == chain_hash(head, original.digest())
                    head = e.entry_hash
            if model.current is not None:
                # Invariant 10: the lineage's transcript reads back in order, generation
                # by generation.
                chain, cursor = [], model.current
                while cursor is not None:
                    chain.insert(0, cursor)
                    cursor = self.gens[cursor].previous
                lineage = self.ledger.transcript(key, lineage=True)
                expected = [(s, i) for s in chain for i in self.gens[s].entries]
                assert [(e.session_id, e.entry_id) for e in lineage] == expected

    @invariant()
    def log_chain_verifies(self) -> None:
        # Invariant 12 from the log: recomputing every generation's chain reproduces its hashes.
        if self.steps % REPLAY_EVERY:
            return
        heads: dict[str, str] = {}
        for _, event in self.ledger.log(limit=100_000):
            if isinstance(event, TranscriptAppended):
                prev = heads.get(event.session_id, "")
                assert event.prev_hash == prev
                assert event.entry_hash == chain_hash(prev, event.entry.digest())
                heads[event.session_id] = event.entry_hash
        # Invariant 3, replay equals live, periodically (and at teardown).
        assert_replay_equals_live(self.ledger)
        log = self.ledger.log(limit=100_000)
        # Invariant 4: the tracking position is the log head after every committed command.
        assert self.ledger.position() == (log[-1][0] if log else 0)


# -- the runs ---------------------------------------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sessionledger-machine-") as path:
        yield Path(path)


_DEBUG = {"phases": [Phase.generate]} if os.environ.get("MACHINE_NO_SHRINK") else {}
SQLITE_SETTINGS = settings(
    **_DEBUG,  # type: ignore[arg-type]
    max_examples=50,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
POSTGRES_SETTINGS = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_ledger_machine_on_sqlite(workdir: Path) -> None:
    class OnSqlite(LedgerMachine):
        open_url = staticmethod(lambda: f"sqlite:///{workdir / uuid.uuid4().hex}.db")

    run_state_machine_as_test(OnSqlite, settings=SQLITE_SETTINGS)


@pytest.mark.postgres
def test_ledger_machine_on_postgres(postgres_server: Any) -> None:
    class OnPostgres(LedgerMachine):
        open_url = staticmethod(postgres_server.create_database)

    run_state_machine_as_test(OnPostgres, settings=POSTGRES_SETTINGS)


def test_deleted_key_stays_deleted_after_a_late_event_on_older_generation(
    sqlite_url: str,
) -> None:
    """Invariant 8, no resurrection (docs/invariants.md): a late event for an *older*
    archived generation, arriving after the delete, is recorded against that generation
    (it becomes the last one touched) and the key is still answered SessionDeleted naming
    the generation the deletion tombstoned, not UnknownSession, and has no row."""
    with Ledger.open(sqlite_url) as ledger:
        key = KEYS[0]
        s1 = ledger.resolve(key, at=T0).session.session_id
        s2 = ledger.reset(key, at=T0).session_id
        ledger.delete(key, at=T0)
        late = {
            "type": "overrides.changed",
            "eventId": "late",
            "sessionKey": key,
            "sessionId": s1,
            "occurredAt": T0.isoformat(),
            "writer": "admin",
            "overrides": {"model": "x"},
        }
        (result,) = ledger.record([late])
        assert (result.outcome, result.session_id, result.current_session_id) == (
            "archived",
            s1,
            None,
        )
        with pytest.raises(SessionDeleted) as raised:
            ledger.session(key)
        assert raised.value.session_id == s2
        old = ledger.generation(s1)
        assert old is not None and (old.late_events, old.overrides) == (1, {"model": "x"})
        assert key not in {view.session_key for view in ledger.sessions(limit=1000).items}
        assert_replay_equals_live(ledger)
