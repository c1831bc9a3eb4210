"""Each runId and sessionId names one session key, held by the store's identifiers
(`sessionledger_identifiers`, migration 0013), not by reading the read models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from sessionledger.domain.errors import InvalidEvent
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.schema import alembic_config, upgrade

KEY = "agent:main:telegram:direct:4242"
OTHER = "agent:ops:slack:channel:c01"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def start(key: str, sid: str, event_id: str, run: str) -> dict[str, Any]:
    return {
        "type": "run.started",
        "eventId": event_id,
        "sessionKey": key,
        "sessionId": sid,
        "runId": run,
        "trigger": "user",
        "occurredAt": T0.isoformat(),
        "writer": "runner",
    }


def identifiers(engine: Engine) -> set[tuple[str, str, str]]:
    query = text("SELECT field, identifier, session_key FROM sessionledger_identifiers")
    with engine.connect() as connection:
        return {(r[0], r[1], r[2]) for r in connection.execute(query)}


def test_a_run_id_another_key_took_is_rejected_and_the_rest_of_the_batch_recorded(
    ledger: Ledger,
) -> None:
    s1 = ledger.resolve(KEY, at=T0).session.session_id
    s2 = ledger.resolve(OTHER, at=T0).session.session_id
    ledger.record([start(KEY, s1, "e1", "shared")])
    clash, own = ledger.record([start(OTHER, s2, "e2", "shared"), start(OTHER, s2, "e3", "own")])
    assert clash.outcome == "rejected"
    assert clash.reason == "runId: 'shared' is already used by another session"
    assert own.outcome == "applied" and own.position is not None
    # Within one call too: the first key to start a run keeps its id.
    first, second = ledger.record([start(KEY, s1, "e4", "new"), start(OTHER, s2, "e5", "new")])
    assert (first.outcome, second.outcome) == ("applied", "rejected")
    assert {r.run_id for r in ledger.runs(s2)} == {"own"}


def test_a_session_id_any_key_used_is_refused(ledger: Ledger) -> None:
    s1 = ledger.resolve(KEY, at=T0, session_id="chosen").session.session_id
    assert s1 == "chosen"
    with pytest.raises(InvalidEvent) as refused:
        ledger.resolve(OTHER, at=T0, session_id="chosen")
    assert refused.value.field == "sessionId"
    opened = ledger.resolve(OTHER, at=T0).session.session_id
    with pytest.raises(InvalidEvent):
        ledger.reset(OTHER, session_id="chosen", at=T0)
    with pytest.raises(InvalidEvent):
        ledger.reset(KEY, session_id=opened, at=T0)
    assert ledger.reset(OTHER, session_id="another", at=T0).session.session_id == "another"


def test_the_identifiers_are_taken_with_their_events_and_kept_across_a_rebuild(
    ledger: Ledger, engine: Engine
) -> None:
    s1 = ledger.resolve(KEY, at=T0).session.session_id
    ledger.record([start(KEY, s1, "e1", "r1")])
    s2 = ledger.reset(KEY, at=T0).session.session_id
    taken = {("sessionId", s1, KEY), ("sessionId", s2, KEY), ("runId", "r1", KEY)}
    assert identifiers(engine) == taken
    ledger.rebuild()
    assert identifiers(engine) == taken
    o1 = ledger.resolve(OTHER, at=T0).session.session_id
    (clash,) = ledger.record([start(OTHER, o1, "e2", "r1")])
    assert clash.outcome == "rejected" and (clash.reason or "").startswith("runId:")


def test_the_upgrade_fills_the_identifiers_from_the_log(engine: Engine, database_url: str) -> None:
    """0013 reads them from the events (the read models may lag behind the log); a round
    trip through the downgrade gives back the same rows, and the rule holds after it."""
    with Ledger.open(database_url) as ledger:
        s1 = ledger.resolve(KEY, at=T0).session.session_id
        o1 = ledger.resolve(OTHER, at=T0).session.session_id
        ledger.record([start(KEY, s1, "e1", "r1"), start(OTHER, o1, "e2", "r2")])
        ledger.reset(KEY, at=T0)
    taken = identifiers(engine)
    assert len(taken) == 5
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0012")
        connection.execute(text("DELETE FROM ledger_runs"))  # rows no longer decide
    upgrade(engine)
    assert identifiers(engine) == taken
    with Ledger.open(database_url, upgrade="never") as ledger:
        (clash,) = ledger.record([start(OTHER, o1, "e3", "r1")])
        assert clash.outcome == "rejected" and (clash.reason or "").startswith("runId:")
        with pytest.raises(InvalidEvent):
            ledger.reset(OTHER, session_id=s1, at=T0)
