"""A writer's aggregate cache is only trusted while nobody else has written.

Two ledgers on one store stand for two processes: each skips the per-command
fast-forward while the log head is the one it last committed, so when the other
writes, it must notice and decide against the other's events, never its own stale
copy.
"""

from __future__ import annotations

from datetime import UTC, datetime

from infrastructure.ledger import Ledger
from tests.helpers import assert_replay_equals_live

KEY = "agent:main:slack:direct:7"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def append(session_id: str, n: int, parent: int | None) -> dict[str, object]:
    return {
        "type": "transcript.appended",
        "eventId": f"e{n}",
        "sessionKey": KEY,
        "sessionId": session_id,
        "occurredAt": T0.isoformat(),
        "writer": "runner",
        "entry": {
            "id": f"m{n}",
            "parentId": None if parent is None else f"m{parent}",
            "role": "user",
            "content": f"turn {n}",
            "timestamp": T0.isoformat(),
        },
    }


def test_each_writer_decides_against_the_others_events(database_url: str) -> None:
    with Ledger.open(database_url) as first, Ledger.open(database_url) as second:
        sid = first.resolve(KEY, at=T0).session.session_id
        assert first.record([append(sid, 1, None)])[0].outcome == "applied"
        # The second writer loads the key after the first wrote; then they alternate,
        # each append naming the other's entry as its parent.
        for n in range(2, 8):
            writer = second if n % 2 == 0 else first
            (result,) = writer.record([append(sid, n, n - 1)])
            assert result.outcome == "applied", result.reason
        # The other writer's entry, delivered again under a fresh eventId, is known
        # (a stale copy would not know its parent and refuse it instead).
        (again,) = first.record([{**append(sid, 99, 6), "entry": append(sid, 6, 5)["entry"]}])
        assert again.outcome == "duplicate", again.reason
        assert first.session(KEY).entry_count == 7
        # A reset by one is a takeover the other sees at once.
        reset = second.reset(KEY)
        (late,) = first.record([append(sid, 8, 7)])
        assert late.outcome == "archived"
        assert late.current_session_id == reset.session_id
        assert_replay_equals_live(first)
