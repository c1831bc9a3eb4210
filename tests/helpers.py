"""Assertions and event builders shared by the test layers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sessionledger.infrastructure.ledger import Ledger


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
