"""A writer's caches (aggregates, rows) are only trusted while nobody else has written.

Two ledgers on one store stand for two processes: each skips the per-command
fast-forward and row queries while the log head is the one it last committed, so
when the other writes (or rebuilds the read models), it must notice and decide and
fold against the store, never its own stale copy. A transaction that fails leaves
nothing of itself in either cache.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.infrastructure.ledger import Ledger
from tests.helpers import assert_replay_equals_live, user_turn

KEY = "agent:main:slack:direct:7"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def append(session_id: str, n: int, parent: int | None) -> dict[str, object]:
    return user_turn(KEY, session_id, n, parent=parent, occurred_at=T0)


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


def test_a_rebuild_elsewhere_voids_the_rows_a_writer_holds(database_url: str) -> None:
    """A writer keeps the rows it last wrote between commands; a rebuild by another
    process replaces the read models under it (writing no event), so the writer must
    read them again rather than fold on from its own copy."""
    with Ledger.open(database_url) as writer, Ledger.open(database_url) as operator:
        sid = writer.resolve(KEY, at=T0).session.session_id
        writer.record([append(sid, 1, None)])
        engine = create_engine(database_url)
        with engine.begin() as connection:  # damage the row: a rebuild will repair it
            connection.execute(
                text("UPDATE ledger_generations SET late_events = 500 WHERE session_id = :s"),
                {"s": sid},
            )
        engine.dispose()
        operator.record([append(sid, 2, 1)])
        # The other writer wrote, so the writer reads the (damaged) row and keeps it; the
        # fold carries the count forward.
        writer.record([append(sid, 3, 2)])
        assert late_events(writer, sid) == 500
        operator.rebuild()
        assert late_events(writer, sid) == 0
        writer.record([append(sid, 4, 3)])
        assert late_events(writer, sid) == 0
        assert writer.session(KEY).entry_count == 4
        assert_replay_equals_live(writer)


def late_events(ledger: Ledger, session_id: str) -> int:
    generation = ledger.generation(session_id)
    assert generation is not None
    return generation.late_events


def test_a_failed_transaction_leaves_no_rows_behind_in_the_cache(sqlite_url: str) -> None:
    """The fold's rows are cached as they are written; if the transaction then fails
    (here: a trigger refuses the receipt, the last row written), none of them counts."""
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        engine = create_engine(sqlite_url)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON ledger_receipts"
                    " WHEN NEW.event_id = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        with pytest.raises(StoreUnavailable):
            ledger.record([start(sid, "refused")])
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER refuse"))
        engine.dispose()
        (result,) = ledger.record([start(sid, "accepted")])
        assert result.outcome == "applied", result.reason
        run = ledger.run("r1")
        assert run is not None and run.status == "running"
        assert_replay_equals_live(ledger)


def start(session_id: str, event_id: str) -> dict[str, object]:
    return {
        "type": "run.started",
        "eventId": event_id,
        "sessionKey": KEY,
        "sessionId": session_id,
        "occurredAt": T0.isoformat(),
        "writer": "runner",
        "runId": "r1",
        "trigger": "user",
    }
