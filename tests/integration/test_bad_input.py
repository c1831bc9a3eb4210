"""bad input gets an error that names the field, and nothing is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sessionledger.domain.errors import InvalidEvent, LimitExceeded
from sessionledger.domain.values import MAX_ENTRY_BYTES, MAX_KEY_LENGTH
from sessionledger.infrastructure.ledger import Ledger

KEY = "agent:main:slack:channel:c01"
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def started(session_id: str, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "run.started",
        "eventId": "e-start",
        "sessionKey": KEY,
        "sessionId": session_id,
        "runId": "r1",
        "occurredAt": "2026-11-21T09:00:01Z",
        "writer": "runner",
        "trigger": "user",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def appended(session_id: str, entry: dict[str, Any], event_id: str = "e-append") -> dict[str, Any]:
    return {
        "type": "transcript.appended",
        "eventId": event_id,
        "sessionKey": KEY,
        "sessionId": session_id,
        "occurredAt": "2026-11-21T09:00:02Z",
        "writer": "runner",
        "entry": {"timestamp": "2026-11-21T09:00:02Z", "role": "user", "content": "x", **entry},
    }


@pytest.fixture
def opened(ledger: Ledger) -> tuple[Ledger, str]:
    return ledger, ledger.resolve(KEY, at=T0).session.session_id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "run.exploded"}, "events[1].type"),
        ({"type": None}, "events[1].type"),
        ({"trigger": "telepathy"}, "events[1].trigger"),
        ({"writer": "robot"}, "events[1].writer"),
        ({"eventId": None}, "events[1].eventId"),
        ({"eventId": ""}, "events[1].eventId"),
        ({"runId": None}, "events[1].runId"),
        ({"sessionKey": "k" * (MAX_KEY_LENGTH + 1)}, "events[1].sessionKey"),
        ({"sessionKey": "agent:main:\x07bell"}, "events[1].sessionKey"),
        ({"occurredAt": "2026-11-21T09:00:01"}, "events[1].occurredAt"),
        ({"occurredAt": "yesterday"}, "events[1].occurredAt"),
        # No UTC date a datetime can hold: the fold and the reads would overflow.
        ({"occurredAt": "9999-12-31T23:59:00-01:00"}, "events[1].occurredAt"),
        ({"occurredAt": "0001-01-01T00:00:00+00:30"}, "events[1].occurredAt"),
        ({"surprise": 1}, "events[1].surprise"),
    ],
)
def test_malformed_events_name_the_field_and_record_nothing(
    opened: tuple[Ledger, str], change: dict[str, Any], field: str
) -> None:
    ledger, sid = opened
    before = ledger.log()
    good = started(sid, eventId="e-ok", runId="r-ok")
    bad = {**started(sid), **change}
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(InvalidEvent) as raised:
        ledger.record([good, bad])
    assert raised.value.field == field, raised.value.details
    assert ledger.log() == before  # the good event of the batch was not recorded either
    assert ledger.session(KEY).status == "new"


def test_wrong_enum_inside_an_entry_is_named_with_its_path(opened: tuple[Ledger, str]) -> None:
    ledger, sid = opened
    with pytest.raises(InvalidEvent) as raised:
        ledger.record([appended(sid, {"id": "m1", "role": "wizard"})])
    assert raised.value.field == "events[0].entry.role"


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_an_entry_time_with_no_utc_date_is_named(
    opened: tuple[Ledger, str], timestamp: str
) -> None:
    ledger, sid = opened
    with pytest.raises(InvalidEvent) as raised:
        ledger.record([appended(sid, {"id": "m1", "timestamp": timestamp})])
    assert raised.value.field == "events[0].entry.timestamp"
    assert "UTC" in raised.value.message
    assert ledger.session(KEY).entry_count == 0


def test_oversized_entry_is_refused(opened: tuple[Ledger, str]) -> None:
    ledger, sid = opened
    with pytest.raises(LimitExceeded) as raised:
        ledger.record([appended(sid, {"id": "m1", "content": "x" * (MAX_ENTRY_BYTES + 1)})])
    assert raised.value.field == "events[0].entry"
    assert str(MAX_ENTRY_BYTES) in raised.value.message


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_is_bounded(opened: tuple[Ledger, str], count: int) -> None:
    ledger, sid = opened
    events = [started(sid, eventId=f"e{i}", runId=f"r{i}") for i in range(count)]
    with pytest.raises(InvalidEvent) as raised:
        ledger.record(events)
    assert raised.value.field == "events"
    assert isinstance(raised.value, LimitExceeded) == (count > 0)


def test_every_problem_of_a_batch_is_listed(opened: tuple[Ledger, str]) -> None:
    ledger, sid = opened
    with pytest.raises(InvalidEvent) as raised:
        ledger.record([started(sid, trigger="x"), started(sid, writer="y")])
    fields = [d["field"] for d in raised.value.details]
    assert fields == ["events[0].trigger", "events[1].writer"]


def test_domain_rejections_name_the_field_and_record_nothing(opened: tuple[Ledger, str]) -> None:
    ledger, sid = opened
    ledger.record([appended(sid, {"id": "m1"}, event_id="a1")])
    before = len(ledger.log())
    results = ledger.record(
        [
            appended(sid, {"id": "m2", "parentId": "nope"}, event_id="a2"),
            appended(sid, {"id": "m1", "content": "different"}, event_id="a3"),
            started(sid, eventId="a4", sessionKey="agent:main:never:seen"),
            started(sid, eventId="a5", sessionId="not-a-generation"),
            {**started(sid, eventId="a6", trigger=None), "type": "run.ended", "outcome": "done"},
        ]
    )
    reasons = [(r.outcome, (r.reason or "").split(":")[0]) for r in results]
    assert reasons == [
        ("rejected", "entry.parentId"),
        ("rejected", "entry.id"),
        ("rejected", "sessionKey"),
        ("rejected", "sessionId"),
        ("rejected", "runId"),
    ]
    assert all(r.position is None for r in results)
    assert len(ledger.log()) == before


def test_reused_event_id_with_other_content_is_rejected(opened: tuple[Ledger, str]) -> None:
    ledger, sid = opened
    (first,) = ledger.record([started(sid)])
    (again,) = ledger.record([started(sid, trigger="cron")])
    assert first.outcome == "applied"
    assert again.outcome == "rejected"
    assert again.reason is not None and again.reason.startswith("eventId:")


def test_bad_keys_and_ids_in_commands_are_named(ledger: Ledger) -> None:
    with pytest.raises(InvalidEvent) as raised:
        ledger.resolve("")
    assert raised.value.field == "sessionKey"
    with pytest.raises(InvalidEvent) as raised:
        ledger.resolve(KEY, session_id="bad\nid")
    assert raised.value.field == "sessionId"
    assert ledger.log() == []


EARLY = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))  # 0000-12-31 in UTC
SUB_MINUTE = datetime(1, 1, 1, tzinfo=timezone(timedelta(seconds=30)))  # kept in UTC


@pytest.mark.parametrize("at", [EARLY, SUB_MINUTE, datetime(2026, 11, 21, 9, 0)])
def test_a_command_time_with_no_utc_date_or_no_timezone_is_named(
    opened: tuple[Ledger, str], at: datetime
) -> None:
    ledger, sid = opened
    before = ledger.log()
    commands = [
        lambda: ledger.resolve(KEY, at=at),
        lambda: ledger.reset(KEY, at=at),
        lambda: ledger.delete(KEY, at=at),
        lambda: ledger.set_binding(KEY, "claude", "cli-1", at=at),
        lambda: ledger.drop_binding(KEY, "claude", at=at),
        lambda: ledger.recover(timedelta(minutes=5), at=at),
        lambda: ledger.prune(timedelta(days=1), at=at),
    ]
    for command in commands:
        with pytest.raises(InvalidEvent) as raised:
            command()
        assert raised.value.field == "at"
    with pytest.raises(InvalidEvent) as raised:
        ledger.audit(KEY, as_of=at)
    assert raised.value.field == "asOf"
    assert ledger.log() == before
    assert ledger.session(KEY).session_id == sid
