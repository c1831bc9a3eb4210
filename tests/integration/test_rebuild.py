"""`rebuild` while the store keeps serving (docs/invariants.md, rule 3): the log is folded into the
shadow tables page by page, then swapped in with one short write transaction. Writers
keep being acknowledged meanwhile, readers never see a half-built read model, no
acknowledged event is lost, and replay = live holds afterwards."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.maintenance import shadow
from tests.helpers import assert_replay_equals_live

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
KEYS = 30


def key(i: int) -> str:
    return f"agent:main:telegram:direct:{i}"


def append(ledger: Ledger, k: str, sid: str, event_id: str) -> Any:
    (result,) = ledger.record(
        [
            {
                "type": "transcript.appended",
                "eventId": event_id,
                "sessionKey": k,
                "sessionId": sid,
                "occurredAt": T0.isoformat(),
                "writer": "heartbeat",
                "entry": {"id": event_id, "role": "assistant", "content": "x", "timestamp": T0},
            }
        ]
    )
    return result


def test_rebuild_while_another_thread_keeps_writing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadow, "PAGE", 25)  # many short shadow transactions
    with Ledger.open(database_url) as setup:
        sids = {key(i): setup.resolve(key(i), at=T0).session.session_id for i in range(KEYS)}
        for i in range(KEYS):
            for n in range(8):
                append(setup, key(i), sids[key(i)], f"pre-{i}-{n}")
        baseline = setup.positions()[1]

    stop = threading.Event()
    acknowledged: dict[str, int] = {}
    during: list[float] = []
    problems: list[str] = []
    window: list[float] = []

    def write() -> None:
        with Ledger.open(database_url) as writer:
            n = 0
            while not stop.is_set():
                k = key(n % KEYS)
                result = append(writer, k, sids[k], f"live-{n}")
                assert result.outcome == "applied", result
                acknowledged[result.event_id] = result.position
                if window and not stop.is_set():
                    during.append(time.monotonic())
                n += 1

    def read() -> None:
        seen: dict[str, int] = {}
        with Ledger.open(database_url) as reader:
            while not stop.is_set():
                page = reader.sessions(limit=1000)
                if len(page.items) != KEYS:
                    problems.append(f"{len(page.items)} sessions visible")
                for view in page.items:
                    if view.entry_count < seen.get(view.session_key, 8):
                        problems.append(f"{view.session_key}: {view.entry_count} entries")
                    seen[view.session_key] = view.entry_count
                entries = reader.transcript(key(0))
                if len(entries) < seen.get(key(0), 8) or [e.seq for e in entries] != list(
                    range(1, len(entries) + 1)
                ):
                    problems.append(f"transcript of {key(0)}: {len(entries)} entries")

    side_write = shadow.Shadow.side_write
    pages: list[int] = []

    def page_then_let_writers_in(self: shadow.Shadow, work: Any) -> Any:
        """Between two shadow pages the writer lock is free: writers get acknowledged."""
        result = side_write(self, work)
        pages.append(1)
        if len(window) == 1 and len(pages) % 4 == 0:  # while the rebuild runs
            seen = len(acknowledged)
            deadline = time.monotonic() + 10
            while len(acknowledged) < seen + 2 and time.monotonic() < deadline:
                time.sleep(0.005)
        return result

    monkeypatch.setattr(shadow.Shadow, "side_write", page_then_let_writers_in)
    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    try:
        with Ledger.open(database_url) as operator:
            time.sleep(0.2)
            window.append(time.monotonic())
            progress: list[int] = []
            position = operator.rebuild(on_progress=progress.append)
            window.append(time.monotonic())
            assert position >= baseline
            assert sum(progress) >= position  # every event folded, page by page
            assert len(progress) > 3
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert problems == []
    # Writers were acknowledged while the rebuild ran, not held off until it finished.
    assert len([t for t in during if window[0] < t < window[1]]) >= 2 * (len(pages) // 4)
    with Ledger.open(database_url) as after:
        engine = create_engine(database_url)
        with engine.connect() as connection:
            receipts = dict(
                connection.execute(text("SELECT event_id, position FROM ledger_receipts")).all()
            )
        engine.dispose()
        assert {e: receipts.get(e) for e in acknowledged} == acknowledged
        assert sum(v.entry_count for v in after.sessions(limit=1000).items) == (
            KEYS * 8 + len(acknowledged)
        )
        assert_replay_equals_live(after)
        assert after.verify().ok


def test_rebuild_replaces_rows_changed_behind_the_stores_back(
    ledger: Ledger, database_url: str
) -> None:
    sid = ledger.resolve(key(1), at=T0).session.session_id
    for n in range(3):
        append(ledger, key(1), sid, f"e{n}")
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM ledger_entries"))
        connection.execute(text("UPDATE ledger_generations SET resumable = false"))
        connection.execute(text("INSERT INTO sessionledger_tracking_shadow VALUES ('x', 5)"))
    engine.dispose()
    assert ledger.replay_mismatches() != []
    assert ledger.rebuild() == ledger.positions()[1]
    assert_replay_equals_live(ledger)
    assert [e.entry_id for e in ledger.transcript(key(1))] == ["e0", "e1", "e2"]
    append(ledger, key(1), sid, "e3")  # the live projection goes on from the swapped position
    assert ledger.session(key(1)).entry_count == 4
    assert_replay_equals_live(ledger)


def test_a_time_with_a_sub_minute_offset_replays_as_it_was_projected(database_url: str) -> None:
    # The Python API takes any aware datetime; the log writes offsets to the minute.
    at = datetime(2026, 11, 21, 10, 0, tzinfo=timezone(timedelta(seconds=30)))
    with Ledger.open(database_url) as ledger:
        sid = ledger.resolve(key(1), at=at).session.session_id
        ledger.record(
            [
                {
                    "type": "run.started",
                    "eventId": "odd-offset",
                    "sessionKey": key(1),
                    "sessionId": sid,
                    "runId": "r1",
                    "occurredAt": at,
                    "writer": "runner",
                    "trigger": "user",
                }
            ]
        )
        assert ledger.session(key(1)).started_at == at
        assert_replay_equals_live(ledger)
