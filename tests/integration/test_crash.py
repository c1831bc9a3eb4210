"""Durability (invariant 5): nothing acknowledged is lost, and a restart catches the projection up.

A child process ingests mixed batches and prints each acknowledgement only after
`record()` returned. We SIGKILL it at random moments (after a random number of
acknowledged batches, plus a random sub-batch delay so the kill lands anywhere in a
transaction), reopen the store and check every acknowledged event is in the log with
its receipt, every batch is wholly there or wholly absent, and replay equals live.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, func, insert, select, update

from sessionledger.domain.events import GenerationOpened, LedgerEvent, SessionRotated
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.settings import database_url as normalise_url
from sessionledger.projections.tables import PROJECTION_NAME, TABLES
from tests.helpers import assert_replay_equals_live
from tests.integration.workers.process import Worker

pytestmark = pytest.mark.slow

ROUNDS = 5


def whole_log(ledger: Ledger) -> list[tuple[int, LedgerEvent]]:
    events: list[tuple[int, LedgerEvent]] = []
    while page := ledger.log(after=events[-1][0] if events else 0, limit=1000):
        events.extend(page)
    return events


def check_store(url: str, lines: list[dict[str, Any]]) -> int:
    """Reopen the store and check durability (invariant 5) against everything the children
    printed."""
    with Ledger.open(url) as ledger:
        log = whole_log(ledger)
        positions = {event.event_id: position for position, event in log}
        assert len(positions) == len(log), "an eventId was logged twice"

        # Projection caught up on open, with no manual step.
        assert ledger.position() == (log[-1][0] if log else 0)

        # Every batch is all there or not there at all (acknowledged ones: all there).
        for line in lines:
            if "send" in line:
                present = [event_id in positions for event_id in line["send"]]
                assert all(present) or not any(present), f"half-written batch {line['send']}"

        acked = [item for line in lines if "ack" in line for item in line["ack"]]
        for item in acked:
            event_id = item["fact"]["eventId"]
            assert event_id in positions, f"acknowledged {event_id} is not in the log"
            assert positions[event_id] == item["position"]
            assert item["outcome"] in ("applied", "archived")

        # Each acknowledged event has its receipt: re-recording answers as the first time.
        for start in range(0, len(acked), 1000):
            chunk = acked[start : start + 1000]
            results = ledger.record([item["fact"] for item in chunk])
            for item, result in zip(chunk, results, strict=True):
                assert (result.outcome, result.position) == (item["outcome"], item["position"])
                assert result.reason is not None and result.reason.startswith("duplicate")
        assert whole_log(ledger) == log, "re-recording acknowledged events changed the log"

        # Acknowledged resets happened, and no rotation is missing its new generation.
        rotations = {e.to_session_id: e for _, e in log if isinstance(e, SessionRotated)}
        opened = {e.session_id: e for _, e in log if isinstance(e, GenerationOpened)}
        for line in lines:
            if "reset" in line:
                assert rotations[line["to"]].session_id == line["from"]
        for to, rotation in rotations.items():
            assert opened[to].previous_session_id == rotation.session_id

        assert_replay_equals_live(ledger)
        return len(acked)


@pytest.fixture
def children() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for child in started:
        child.kill()


def test_acknowledged_events_survive_kill_9(database_url: str, children: list[Worker]) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    lines: list[dict[str, Any]] = []
    for round_no in range(ROUNDS):
        # Rounds 2 and 4 run two ingesting processes side by side, one killed while the
        # other may be queued on its lock, then the other.
        pair = round_no in (2, 4)
        batch = [
            Worker("ingest_child", database_url, f"k{round_no}{n}", str(rng.randrange(1 << 30)))
            for n in range(2 if pair else 1)
        ]
        children.extend(batch)
        for child in batch:
            if round_no in (0, 3):
                # Killed while it opens the store: creating the schema (round 0), catching up.
                child.wait_for(lambda c=child: c.count("opening") == 1, "the child to start")  # type: ignore[misc]
                time.sleep(rng.uniform(0, 0.6))
            else:
                target = rng.randrange(1, 16)
                child.wait_for(lambda t=target, c=child: c.count("ack") >= t, f"{target} acks")  # type: ignore[misc]
                time.sleep(rng.uniform(0, 0.03))  # where in a transaction the kill lands
            child.kill()
        report = []
        for child in batch:
            lines.extend(child.lines)
            in_flight = bool(child.lines) and "send" in child.lines[-1]
            report.append(f"{child.count('ack')} acks{' + 1 in flight' if in_flight else ''}")
        acked = check_store(database_url, lines)
        print(f"seed {seed} round {round_no}: killed after {', '.join(report)}; {acked} in all")
    assert sum(1 for line in lines if "ack" in line) >= ROUNDS


def _read_models(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return {
                table.name: sorted(
                    (tuple(map(repr, row)) for row in connection.execute(select(table))),
                )
                for table in (*TABLES.projected, TABLES.tracking)
            }
    finally:
        engine.dispose()


def _rewind(url: str, rows: dict[str, list[dict[str, Any]]], position: int) -> None:
    """Put the read models and tracking back to an earlier state; the log stays ahead."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as connection:
            for table in reversed(TABLES.projected):
                connection.execute(table.delete())
            for table in TABLES.projected:
                if rows[table.name]:
                    connection.execute(insert(table), rows[table.name])
            t = TABLES.tracking
            if position == 0:
                connection.execute(t.delete())
            else:
                connection.execute(
                    update(t)
                    .where(t.c.application_name == PROJECTION_NAME)
                    .values(notification_id=position)
                )
    finally:
        engine.dispose()


def _dump(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return {
                table.name: [dict(row._mapping) for row in connection.execute(select(table))]
                for table in TABLES.projected
            }
    finally:
        engine.dispose()


def _ingest(ledger: Ledger, prefix: str, turns: int, resets: bool = True) -> None:
    keys = [f"agent:main:telegram:direct:{n}" for n in range(3)]
    for key in keys:
        ledger.resolve(key, interaction="user")
    for turn in range(turns):
        key = keys[turn % len(keys)]
        sid = ledger.session(key).session_id
        run = f"{prefix}-r{turn}"
        entry = f"{prefix}-m{turn}"
        ledger.record(
            [
                {
                    "type": "run.started",
                    "eventId": f"{prefix}-s{turn}",
                    "sessionKey": key,
                    "sessionId": sid,
                    "occurredAt": "2026-11-21T10:00:00Z",
                    "writer": "runner",
                    "runId": run,
                    "trigger": "user",
                },
                {
                    "type": "transcript.appended",
                    "eventId": f"{prefix}-a{turn}",
                    "sessionKey": key,
                    "sessionId": sid,
                    "occurredAt": "2026-11-21T10:00:00Z",
                    "writer": "runner",
                    "entry": {
                        "id": entry,
                        "role": "assistant",
                        "content": f"reply {turn}",
                        "timestamp": "2026-11-21T10:00:00Z",
                    },
                },
                {
                    "type": "run.ended",
                    "eventId": f"{prefix}-e{turn}",
                    "sessionKey": key,
                    "sessionId": sid,
                    "occurredAt": "2026-11-21T10:00:01Z",
                    "writer": "runner",
                    "runId": run,
                    "outcome": "done",
                    "usage": {"input": 3, "output": 4},
                },
            ]
        )
        if resets and turn % 7 == 6:
            ledger.reset(key)


@pytest.mark.parametrize("rewind_to", ["empty", "midway"])
def test_restart_catches_the_projection_up(database_url: str, rewind_to: str) -> None:
    """Events in the log beyond the tracking position are folded on open, no manual step."""
    with Ledger.open(database_url) as ledger:
        _ingest(ledger, "a", 30)
        midway = ledger.position()
    earlier = _dump(database_url)
    with Ledger.open(database_url) as ledger:
        _ingest(ledger, "b", 40)
        head = ledger.position()
        live_views = {key: ledger.session(key) for key in ledger_keys(ledger)}
    live = _read_models(database_url)

    if rewind_to == "empty":
        _rewind(database_url, {name: [] for name in earlier}, 0)
    else:
        _rewind(database_url, earlier, midway)
    assert _read_models(database_url) != live

    with Ledger.open(database_url) as ledger:
        assert ledger.position() == head
        assert {key: ledger.session(key) for key in live_views} == live_views
        assert_replay_equals_live(ledger)
    assert _read_models(database_url) == live


def ledger_keys(ledger: Ledger) -> list[str]:
    return [row.session_key for row in ledger.sessions(limit=100).items]


def test_a_command_catches_up_a_lagging_projection_first(database_url: str) -> None:
    """A writer that finds the log ahead of the projection folds the gap before it decides."""
    with Ledger.open(database_url) as ledger:
        _ingest(ledger, "a", 12)
        midway = ledger.position()
        earlier = _dump(database_url)
        _ingest(ledger, "b", 12, resets=False)
        head = ledger.position()
        _rewind(database_url, earlier, midway)
        assert ledger.position() == midway
        # The already open ledger's next command folds the gap, then its own event.
        key = ledger_keys(ledger)[0]
        (result,) = ledger.record(
            [
                {
                    "type": "run.started",
                    "eventId": "c-1",
                    "sessionKey": key,
                    "sessionId": ledger.session(key).session_id,
                    "occurredAt": "2026-11-21T10:00:00Z",
                    "writer": "runner",
                    "runId": "c-r1",
                    "trigger": "cron",
                }
            ]
        )
        assert result.outcome == "applied"
        assert result.position == ledger.position() > head
        with ledger.store.database.reading() as connection:
            receipts = connection.execute(select(func.count()).select_from(TABLES.receipts))
            assert receipts.scalar() == len(whole_log(ledger))  # each folded exactly once
        assert_replay_equals_live(ledger)
