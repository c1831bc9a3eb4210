"""A command must not replay a key's whole history: snapshots plus the aggregate cache."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from sessionledger.domain.conversation import conversation_id, project_conversation
from sessionledger.infrastructure.application import snapshot_interval
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.settings import SNAPSHOT_INTERVAL

KEY = "agent:main:main"
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def append(sid: str, n: int) -> dict[str, Any]:
    return {
        "type": "transcript.appended",
        "eventId": f"e{n}",
        "sessionKey": KEY,
        "sessionId": sid,
        "occurredAt": "2026-11-21T08:00:00Z",
        "writer": "runner",
        "entry": {
            "id": f"m{n}",
            "parentId": f"m{n - 1}" if n else None,
            "role": "assistant" if n % 2 else "user",
            "content": f"turn {n}",
            "timestamp": "2026-11-21T08:00:00Z",
        },
    }


class EventsRead:
    """Counts aggregate events the repository loads from the log."""

    def __init__(self, ledger: Ledger) -> None:
        self.count = 0
        recorder = ledger.store.app.recorder
        original = recorder.select_events

        def counting(*args: Any, **kwargs: Any) -> Any:
            found = original(*args, **kwargs)
            self.count += len(found)
            return found

        recorder.select_events = counting  # type: ignore[method-assign]


def test_commands_read_a_bounded_number_of_events(database_url: str) -> None:
    history = 2 * SNAPSHOT_INTERVAL + 57
    with Ledger.open(database_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        for start in range(0, history, 50):
            ledger.record([append(sid, n) for n in range(start, min(start + 50, history))])

    with Ledger.open(database_url) as cold:
        reads = EventsRead(cold)
        cold.record([append(sid, history)])
        assert 0 < reads.count <= SNAPSHOT_INTERVAL  # from the last snapshot on, not from 1
        reads.count = 0
        cold.record([append(sid, history + 1)])
        assert reads.count == 0  # cached and fast-forwarded: nothing new to read
        assert cold.session(KEY).entry_count == history + 2


def test_snapshot_state_equals_the_replayed_aggregate(database_url: str) -> None:
    with Ledger.open(database_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        ledger.record([append(sid, n) for n in range(SNAPSHOT_INTERVAL + 5)])
        ledger.reset(KEY)
        aggregate_id = conversation_id(KEY)
        assert ledger.store.app.snapshots is not None
        (snapshot,) = ledger.store.app.snapshots.get(aggregate_id, desc=True, limit=1)
        events = ledger.store.app.events.get(aggregate_id, lte=snapshot.originator_version)
        replayed = project_conversation(None, events)
        assert replayed is not None
        assert snapshot.state == replayed.to_state()  # type: ignore[attr-defined]
        restored = project_conversation(None, [snapshot])  # type: ignore[list-item]
        assert restored is not None and restored.to_state() == replayed.to_state()


def test_a_long_key_is_snapshotted_less_often_and_still_loads_boundedly(
    database_url: str,
) -> None:
    history = 5_000
    with Ledger.open(database_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        for start in range(0, history, 100):
            ledger.record([append(sid, n) for n in range(start, start + 100)])
        assert ledger.store.app.snapshots is not None
        versions = [
            s.originator_version for s in ledger.store.app.snapshots.get(conversation_id(KEY))
        ]
    # Every 100 events up to 2,048, then every 128 up to 4,096, then every 256 (one
    # snapshot a commit, at its end): 28, where a fixed interval took 50, each holding
    # the transcript so far.
    assert len(versions) < 0.6 * (history // SNAPSHOT_INTERVAL), versions
    batch = 100
    assert all(
        b - a <= max(SNAPSHOT_INTERVAL, a // 8) + batch for a, b in itertools.pairwise(versions)
    )

    with Ledger.open(database_url) as cold:
        reads = EventsRead(cold)
        cold.record([append(sid, history)])
        # from the last snapshot on: at most an interval of the history's length
        assert 0 < reads.count <= snapshot_interval(history + 1)
