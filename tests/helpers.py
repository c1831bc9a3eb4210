"""Assertions and event builders shared by the test layers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from hypothesis import strategies as st
from pydantic import JsonValue

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.errors import SessionDeleted
from sessionledger.domain.events import (
    BindingDroppedFact,
    BindingSetFact,
    Fact,
    LedgerEvent,
    OverridesChangedFact,
    RunEndedFact,
    RunErroredFact,
    RunStartedFact,
    TranscriptAppendedFact,
    TranscriptEntry,
)
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.domain.values import Role, RunOutcome, Trigger, Usage, Writer
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.projections.replay import RowsByTable, replay, replayed_rows


def assert_replay_equals_live(ledger: Ledger) -> None:
    """Invariant 3, replay equals live (docs/invariants.md): a fresh fold of the whole log
    equals the live read models, field for field."""
    mismatches = ledger.replay_mismatches()
    assert mismatches == [], "\n".join(map(str, mismatches[:20]))


def reported(
    kind: str, session_key: str, session_id: str, event_id: str, at: datetime, **fields: Any
) -> dict[str, Any]:
    """An event of type `kind` as a gateway reports it (camelCase JSON), by the runner."""
    return {
        "type": kind,
        "eventId": event_id,
        "sessionKey": session_key,
        "sessionId": session_id,
        "occurredAt": at.isoformat(),
        "writer": "runner",
        **fields,
    }


def user_turn(
    session_key: str,
    session_id: str,
    n: int,
    *,
    parent: int | None,
    occurred_at: datetime,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A `transcript.appended` event as a gateway sends it: event `e{n}` appends the user
    turn `m{n}` under entry `m{parent}` (None: the first entry)."""
    entry = {
        "id": f"m{n}",
        "parentId": None if parent is None else f"m{parent}",
        "role": "user",
        "content": f"turn {n}",
        "timestamp": (timestamp or occurred_at).isoformat(),
    }
    return reported(
        "transcript.appended", session_key, session_id, f"e{n}", occurred_at, entry=entry
    )


# -- pure builders: facts for the aggregate, rows from the fold (no store, no I/O) ------

KEY = "agent:main:telegram:direct:4242"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
NO_USAGE = Usage()


class Facts:
    """Reported facts about one key, each with a fresh eventId, occurring at `at`."""

    def __init__(self, key: str = KEY, at: datetime = T0) -> None:
        self.key = key
        self.at = at
        self.count = 0

    def tags(self, sid: str, writer: Writer = "runner", at: datetime | None = None) -> Any:
        self.count += 1
        return {
            "event_id": f"e{self.count}",
            "session_key": self.key,
            "session_id": sid,
            "occurred_at": self.at if at is None else at,
            "writer": writer,
        }

    def started(
        self,
        sid: str,
        run_id: str,
        *,
        trigger: Trigger = "user",
        writer: Writer = "runner",
        at: datetime | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> RunStartedFact:
        return RunStartedFact(
            **self.tags(sid, writer, at),
            run_id=run_id,
            trigger=trigger,
            model=model,
            provider=provider,
        )

    def ended(
        self,
        sid: str,
        run_id: str,
        *,
        outcome: RunOutcome = "done",
        at: datetime | None = None,
        usage: Usage = NO_USAGE,
    ) -> RunEndedFact:
        return RunEndedFact(**self.tags(sid, at=at), run_id=run_id, outcome=outcome, usage=usage)

    def errored(
        self, sid: str, run_id: str, *, at: datetime | None = None, usage: Usage = NO_USAGE
    ) -> RunErroredFact:
        return RunErroredFact(**self.tags(sid, at=at), run_id=run_id, error="boom", usage=usage)

    def appended(
        self,
        sid: str,
        entry_id: str,
        *,
        parent: str | None = None,
        role: Role = "assistant",
        text: str = "hi",
        writer: Writer = "runner",
        at: datetime | None = None,
    ) -> TranscriptAppendedFact:
        entry = TranscriptEntry(
            id=entry_id, parent_id=parent, role=role, content={"text": text}, timestamp=self.at
        )
        return TranscriptAppendedFact(**self.tags(sid, writer, at), entry=entry)

    def bound(self, sid: str, provider: str, cli_session_id: str) -> BindingSetFact:
        return BindingSetFact(
            **self.tags(sid, "admin"), provider=provider, cli_session_id=cli_session_id
        )

    def unbound(self, sid: str, provider: str) -> BindingDroppedFact:
        return BindingDroppedFact(**self.tags(sid, "admin"), provider=provider, reason="gone")

    def overridden(self, sid: str, **overrides: JsonValue) -> OverridesChangedFact:
        return OverridesChangedFact(**self.tags(sid, "admin"), overrides=overrides)


class Log:
    """The events an aggregate recorded, in log order, and the rows a fresh fold of them
    gives (the fold's public entry point, `replay`)."""

    def __init__(self) -> None:
        self.events: list[LedgerEvent] = []

    def take(self, conversation: Conversation) -> list[LedgerEvent]:
        """Move the aggregate's new events into the log; returns them."""
        new = cast(list[LedgerEvent], conversation.collect_events())
        self.events.extend(new)
        return new

    def positioned(self) -> list[tuple[int, LedgerEvent]]:
        return list(enumerate(self.events, start=1))

    def rows(self) -> RowsByTable:
        """Every read model as a fresh fold of the whole log has it (absent rows left out)."""
        return replayed_rows(replay(self.positioned()))


# Gateway traffic on one key, drawn by hypothesis: commands on the aggregate and facts
# about its generations ("current", the one before it, the first, or one it never had).
GENERATIONS = st.sampled_from(["current", "current", "current", "previous", "first", "nope"])
RUNS = st.tuples(
    st.just("start"),
    GENERATIONS,
    st.integers(0, 1),
    st.sampled_from(["user", "heartbeat", "cron"]),
)
ENDS = st.tuples(
    st.sampled_from(["end", "error"]),
    GENERATIONS,
    st.integers(0, 1),
    st.sampled_from([0, 5, -7200]),  # seconds of clock skew
    st.integers(0, 1000),  # input tokens
)
APPENDS = st.tuples(
    st.just("append"),
    GENERATIONS,
    st.integers(0, 3),
    st.sampled_from([None, None, 0, 1]),
    st.sampled_from(["user", "assistant", "toolResult"]),
    st.sampled_from(["runner", "ingress", "heartbeat"]),
)
BINDINGS = st.tuples(st.sampled_from(["bind", "unbind"]), GENERATIONS, st.sampled_from(["a", "b"]))
OVERRIDES = st.tuples(
    st.just("override"),
    GENERATIONS,
    st.sampled_from(["model", "thinking"]),
    st.sampled_from([None, "x", "y"]),
)
RESOLVES = st.tuples(
    st.just("resolve"), st.sampled_from(["user", "heartbeat"]), st.integers(0, 2 * 3600)
)
LIFECYCLE = st.one_of(
    st.tuples(st.just("reset"), st.sampled_from(["idle", "reset", "daily"])),
    st.tuples(st.just("delete")),
    st.tuples(st.just("prune"), st.sampled_from(["previous", "first"])),
)
# Weighted by hand: runs start and end often (a run must start before it can end), a
# rotation, deletion or pruning now and then (each ends what came before).
TRAFFIC = st.sampled_from(
    [RUNS] * 4 + [ENDS] * 4 + [APPENDS] * 4 + [BINDINGS, OVERRIDES, RESOLVES] + [LIFECYCLE] * 2
).flatmap(lambda kind: kind)


class Traffic:
    """Plays TRAFFIC on one key's aggregate (opened as generation "s0", not collected, so
    its events are the key's whole history) and answers what each command said."""

    def __init__(self) -> None:
        self.conversation = Conversation.open(KEY, at=T0, writer="ingress", session_id="s0")
        self.facts = Facts()
        self.lineage = ["s0"]  # every generation of the key, in opening order
        self.now = T0

    def sid(self, which: str) -> str:
        return {
            "current": self.lineage[-1],
            "previous": self.lineage[-2] if len(self.lineage) > 1 else self.lineage[0],
            "first": self.lineage[0],
            "nope": "nope",
        }[which]

    def play(self, command: tuple[Any, ...]) -> Any:
        kind, facts, conversation = command[0], self.facts, self.conversation
        self.now += timedelta(seconds=1)
        try:
            if kind == "reset":
                previous, new = conversation.reset(reason=command[1], at=self.now)
                self.lineage.append(new)
                return previous, new
            if kind == "delete":
                return conversation.delete(at=self.now)
            if kind == "resolve":
                self.now += timedelta(seconds=command[2])
                resolution = conversation.resolve(
                    now=self.now,
                    interaction=command[1],
                    policy=FreshnessPolicy(mode="idle", idle_minutes=60),
                )
                if resolution.rotated:
                    self.lineage.append(resolution.session_id)
                return resolution
        except SessionDeleted as error:
            return type(error).__name__
        sid = self.sid(command[1])
        if kind == "prune":
            return conversation.prune(sid, at=self.now, reason="old")
        fact: Fact
        if kind == "start":
            fact = facts.started(sid, f"r{command[2]}", trigger=command[3], at=self.now)
        elif kind in ("end", "error"):
            finish = facts.ended if kind == "end" else facts.errored
            at = self.now + timedelta(seconds=command[3])
            fact = finish(sid, f"r{command[2]}", at=at, usage=Usage(input=command[4]))
        elif kind == "append":
            parent = None if command[3] is None else f"m{command[3]}"
            fact = facts.appended(
                sid,
                f"m{command[2]}",
                parent=parent,
                role=command[4],
                writer=command[5],
                at=self.now,
            )
        elif kind == "bind":
            fact = facts.bound(sid, command[2], f"cli-{self.now.timestamp():.0f}")
        elif kind == "unbind":
            fact = facts.unbound(sid, command[2])
        else:
            fact = facts.overridden(sid, **{command[2]: command[3]})
        return conversation.record(fact, self.now)
