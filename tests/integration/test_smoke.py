from __future__ import annotations

from datetime import UTC, datetime

from sessionledger.infrastructure.ledger import Ledger
from tests.helpers import assert_replay_equals_live

KEY = "agent:main:telegram:direct:4242"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def fact(kind: str, event_id: str, session_id: str, **fields: object) -> dict[str, object]:
    return {
        "type": kind,
        "eventId": event_id,
        "sessionKey": KEY,
        "sessionId": session_id,
        "occurredAt": "2026-11-21T10:00:01Z",
        "writer": "runner",
        **fields,
    }


def test_a_late_error_after_reset_lands_on_the_archived_generation(ledger: Ledger) -> None:
    s1 = ledger.resolve(KEY, at=T0).session.session_id
    ledger.record([fact("run.started", "e1", s1, runId="r1", trigger="user")])
    assert ledger.session(KEY).status == "running"

    reset = ledger.reset(KEY, expected_session_id=s1)
    (late,) = ledger.record([fact("run.errored", "e2", s1, runId="r1", error="boom")])

    assert (late.outcome, late.reason) == ("archived", "rotated")  # a real takeover
    assert late.current_session_id == reset.session_id
    row = ledger.session(KEY)
    assert (row.session_id, row.status, row.has_active_run) == (reset.session_id, "new", False)
    archived = ledger.generation(s1)
    assert archived is not None
    assert (archived.status, archived.late_events, archived.state) == ("failed", 1, "archived")
    assert_replay_equals_live(ledger)
