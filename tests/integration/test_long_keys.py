"""Every part of a key may be as long as the key allows (keys up to 512
characters): the agent, channel and kind parsed from it fit the columns that hold
them on SQLite and PostgreSQL alike, in the session row, the run rows and the report."""

from __future__ import annotations

from datetime import UTC, datetime

from sessionledger.domain.values import MAX_KEY_LENGTH
from sessionledger.infrastructure.ledger import Ledger
from tests.helpers import assert_replay_equals_live

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
AGENT = "a" * 300
CHANNEL = "c" * 150
KIND = "k" * 40
KEY = f"agent:{AGENT}:{CHANNEL}:{KIND}:7"


def fact(kind: str, session_id: str, event_id: str, **fields: object) -> dict[str, object]:
    return {
        "type": kind,
        "eventId": event_id,
        "sessionKey": KEY,
        "sessionId": session_id,
        "occurredAt": T0.isoformat(),
        "writer": "runner",
        **fields,
    }


def test_the_longest_key_parts_are_kept_whole(ledger: Ledger) -> None:
    assert len(KEY) <= MAX_KEY_LENGTH
    sid = ledger.resolve(KEY, at=T0).session.session_id
    results = ledger.record(
        [
            fact("run.started", sid, "e1", runId="r1", trigger="user"),
            fact("run.ended", sid, "e2", runId="r1", outcome="done"),
        ]
    )
    assert [r.outcome for r in results] == ["applied", "applied"]
    view = ledger.session(KEY)
    assert (view.agent, view.channel, view.kind) == (AGENT, CHANNEL, KIND)
    run = ledger.run("r1")
    assert run is not None and (run.agent, run.channel) == (AGENT, CHANNEL)
    assert [s.session_key for s in ledger.sessions(agent=AGENT, channel=CHANNEL).items] == [KEY]
    assert_replay_equals_live(ledger)
