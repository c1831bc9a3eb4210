"""Assertions and event builders shared by the test layers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from pydantic import JsonValue

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.events import (
    BindingDroppedFact,
    BindingSetFact,
    LedgerEvent,
    OverridesChangedFact,
    RunEndedFact,
    RunErroredFact,
    RunStartedFact,
    TranscriptAppendedFact,
    TranscriptEntry,
)
from sessionledger.domain.values import Role, RunOutcome, Trigger, Usage, Writer
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.projections.replay import RowsByTable, replay, replayed_rows


def assert_replay_equals_live(ledger: Ledger) -> None:
    """SPEC §4.3: a fresh fold of the whole log equals the live read models, field for field."""
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
