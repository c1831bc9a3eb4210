"""The hot reads run on the DBAPI cursor (projections/raw.py) and decode events straight
from their bytes (infrastructure/mapper.py): they must return exactly what SQLAlchemy's
typed results and the mapper's validating dict path return, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy.exc
from pydantic import ValidationError
from sqlalchemy import Table, select, text

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.projections.raw import RawSelect, in_field_order
from sessionledger.projections.rows import (
    EntryRow,
    EntryView,
    GenerationRow,
    ReceiptRow,
    RunRow,
    SessionRow,
)
from sessionledger.projections.tables import TABLES
from tests.helpers import assert_replay_equals_live

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
BIG = 2**70 + 3  # beyond 64 bits: orjson alone would read it as a float
KEYS = ("agent:main:telegram:direct:1", "agent:ops:slack:group:2", "cron:nightly")
CONTENTS: list[Any] = [
    "plain text",
    {"text": "nested", "parts": [1, 2.5, None, True, {"deep": ["x"]}]},
    ["a", {"b": BIG}],
    -17,
    0.1,
    None,
    'ünïcødé \u2028 "quoted" \\ 12345678901234567890123',
    {"n": 1e300, "m": -0.0},
]

_ids = itertools.count()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fact(key: str, sid: str, kind: str, seconds: float, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "eventId": f"ev{next(_ids)}",
        "sessionKey": key,
        "sessionId": sid,
        "occurredAt": at(seconds),
        "writer": fields.pop("writer", "runner"),
        **fields,
    }


def workload(ledger: Ledger) -> None:
    """Every event type, every column filled and empty, late events, a deletion."""
    for k, key in enumerate(KEYS):
        sid = ledger.resolve(key, at=at(k)).session.session_id
        ledger.set_binding(key, "claude", f"cli-{k}", at=at(k + 1))
        facts = [
            fact(key, sid, "run.started", 2, runId=f"r{k}", trigger="user", model="opus"),
            fact(key, sid, "overrides.changed", 2.5, overrides={"level": "high", "n": BIG}),
        ]
        facts += [
            fact(
                key,
                sid,
                "transcript.appended",
                3 + i,
                runId=f"r{k}",
                writer="ingress" if i % 2 else "runner",
                entry={
                    "id": f"m{k}-{i}",
                    "parentId": f"m{k}-{i - 1}" if i else None,
                    "role": "assistant" if i % 2 else "user",
                    "content": content,
                    "timestamp": at(3 + i),
                },
            )
            for i, content in enumerate(CONTENTS)
        ]
        facts.append(fact(key, sid, "run.started", 20, runId=f"r{k}b", trigger="cron"))
        facts.append(
            fact(
                key,
                sid,
                "run.ended",
                30,
                runId=f"r{k}",
                outcome="done",
                stopReason="end_turn",
                usage={"input": 1200, "output": 80, "cacheRead": 7, "cacheWrite": 1},
            )
        )
        ledger.record(facts)
        if k == 0:
            ledger.drop_binding(key, "claude", at=at(40))
            ledger.reset(key, expected_session_id=sid, at=at(50))
            # late: lands on the archived generation
            ledger.record([fact(key, sid, "run.errored", 45, runId=f"r{k}b", error="boom")])
        if k == 1:
            ledger.delete(key, at=at(60))
            ledger.resolve(key, at=at(70))


@pytest.fixture
def busy(ledger: Ledger) -> Ledger:
    workload(ledger)
    return ledger


def typed(value: Any) -> str:
    """A value with its types (and time zones), so equal-but-different values differ."""
    return repr(value) + repr(getattr(value, "tzinfo", None))


def sqlalchemy_rows(ledger: Ledger, table: Table, row_type: Any) -> list[Any]:
    with ledger.store.database.reading() as connection:
        query = select(table).order_by(*table.primary_key.columns)
        return [row_type(**r._mapping) for r in connection.execute(query)]


@pytest.mark.parametrize(
    ("table", "row_type"),
    [
        (TABLES.sessions, SessionRow),
        (TABLES.generations, GenerationRow),
        (TABLES.runs, RunRow),
        (TABLES.entries, EntryRow),
        (TABLES.receipts, ReceiptRow),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_raw_rows_equal_sqlalchemy_rows_value_for_value(
    busy: Ledger, table: Table, row_type: Any
) -> None:
    expected = sqlalchemy_rows(busy, table, row_type)
    columns = in_field_order(table, row_type)
    raw = RawSelect(select(*columns).order_by(*table.primary_key.columns))
    with busy.store.database.reading() as connection:
        got = raw.rows(connection, row_type)
    assert got == expected
    assert len(got) > 2
    for have, want in zip(got, expected, strict=True):
        for f in fields(row_type):
            assert typed(getattr(have, f.name)) == typed(getattr(want, f.name)), f.name


def test_the_ledger_reads_return_the_stored_rows(busy: Ledger) -> None:
    generations = sqlalchemy_rows(busy, TABLES.generations, GenerationRow)
    runs = sqlalchemy_rows(busy, TABLES.runs, RunRow)
    entries = sqlalchemy_rows(busy, TABLES.entries, EntryRow)
    pointers = sqlalchemy_rows(busy, TABLES.sessions, SessionRow)
    by_id = {g.session_id: g for g in generations}
    for key in KEYS:
        assert busy.generations(key) == sorted(
            (g for g in generations if g.session_key == key), key=lambda g: g.opened_position
        )
    for g in generations:
        assert busy.generation(g.session_id) == g
        assert busy.runs(g.session_id) == sorted(
            (r for r in runs if r.session_id == g.session_id), key=lambda r: r.started_position
        )
    for r in runs:
        assert busy.run(r.run_id) == r
    assert busy.run("nope") is None and busy.generation("nope") is None
    for p in pointers:
        view = busy.session(p.session_key)
        assert view.session_id == p.session_id
        assert view.position == max(p.position, by_id[p.session_id].position)
        chain: list[str] = []
        cursor: str | None = p.session_id
        while cursor is not None:
            chain.insert(0, cursor)
            cursor = by_id[cursor].previous_session_id
        lineage = [e for sid in chain for e in entries if e.session_id == sid]
        read = busy.transcript(p.session_key, lineage=True)
        assert [stored(e) for e in read] == lineage
        # What the rows leave out: the key, and each entry's link to the one before it.
        assert {e.session_key for e in read} <= {p.session_key}
        previous: EntryView | None = None
        for e in read:
            linked = previous is not None and previous.session_id == e.session_id
            assert e.prev_hash == (previous.entry_hash if previous and linked else "")
            previous = e
        assert busy.transcript(p.session_key) == [e for e in read if e.session_id == p.session_id]
    contents = [e.content for e in busy.transcript(KEYS[2])]
    assert contents == CONTENTS
    assert isinstance(contents[2][1]["b"], int)


def stored(view: EntryView) -> EntryRow:
    """The row an entry view was read from."""
    return EntryRow(**{f.name: getattr(view, f.name) for f in fields(EntryRow)})


def test_every_filter_combination_of_the_session_list(busy: Ledger) -> None:
    everything = busy.sessions(limit=1000).items
    assert [v.session_key for v in everything] == sorted(KEYS)
    for view in everything:
        assert view == busy.session(view.session_key)
    busy.clock = lambda: at(60)  # type: ignore[method-assign]
    filters: dict[str, list[Any]] = {
        "status": [None, "done", "new", "running"],
        "agent": [None, "main", "ops"],
        "channel": [None, "telegram", "cron"],
        "active_within_minutes": [None, 1],
        "cursor": [None, KEYS[0]],
    }
    for values in itertools.product(*filters.values()):
        given = dict(zip(filters, values, strict=True))
        since = at(60) - timedelta(minutes=1) if given["active_within_minutes"] else None
        expected = [
            v
            for v in everything
            if (given["status"] is None or v.status == given["status"])
            and (given["agent"] is None or v.agent == given["agent"])
            and (given["channel"] is None or v.channel == given["channel"])
            and (
                since is None
                or v.status == "running"
                or (v.last_interaction_at is not None and v.last_interaction_at >= since)
            )
            and (given["cursor"] is None or v.session_key > given["cursor"])
        ]
        assert busy.sessions(**given).items == expected, given
    first = busy.sessions(limit=1)
    assert first.items == everything[:1] and first.next_cursor == everything[0].session_key
    assert busy.sessions(limit=1, cursor=everything[-1].session_key).next_cursor is None


def test_the_log_decodes_as_the_validating_mapper_does(busy: Ledger) -> None:
    mapper = busy.store.event_log.mapper
    with busy.store.database.reading() as connection:
        stored = connection.execute(select(busy.store.app.events_table).order_by(text("id"))).all()
    log = busy.log(limit=10_000)
    assert [p for p, _ in log] == [r.id for r in stored]
    for (_, event), row in zip(log, stored, strict=True):
        slow = mapper._decode_dict(
            type(event), row.originator_id, row.originator_version, bytes(row.state)
        )
        assert event == slow
        assert typed(event.model_dump()) == typed(slow.model_dump())
        assert event.model_fields_set == slow.model_fields_set
        assert event.fingerprint() == slow.fingerprint()
    for originator in {r.originator_id for r in stored}:
        with busy.store.database.reading() as connection:
            mine = busy.store.event_log.read_aggregate(connection, originator)
        assert [e for _, e in mine] == [e for _, e in log if e.originator_id == originator]
    assert busy.audit(KEYS[0]).summary.events == sum(1 for _, e in log if e.session_key == KEYS[0])
    assert_replay_equals_live(busy)


def test_a_payload_the_fast_path_refuses_takes_the_dict_path(ledger: Ledger) -> None:
    mapper = ledger.store.event_log.mapper
    sid = ledger.resolve(KEYS[0], at=T0).session.session_id
    opened = ledger.log()[0][1]
    stored = mapper.to_stored_event(opened)
    assert opened.session_id == sid
    # Whitespace after the object: not spliceable, still the same event.
    padded = dataclasses.replace(stored, state=stored.state + b" ")
    assert mapper.to_domain_event(padded) == opened
    # Not valid for the event class: the dict path raises what it always raised.
    broken = dataclasses.replace(stored, state=stored.state.replace(b'"writer"', b'"wrtr"'))
    with pytest.raises(ValidationError, match="wrtr"):
        mapper.to_domain_event(broken)


def test_driver_errors_surface_as_sqlalchemy_raises_them(ledger: Ledger) -> None:
    """translate_faults maps SQLAlchemy's exception classes to StoreUnavailable."""
    ledger.resolve(KEYS[0], at=T0)
    failing = select(TABLES.sessions).where(text("no_such_column = 1"))
    engine = ledger.store.database.engine
    with engine.connect() as connection, pytest.raises(sqlalchemy.exc.DBAPIError) as expected:
        connection.execute(failing)
    with engine.connect() as connection, pytest.raises(sqlalchemy.exc.DBAPIError) as raw:
        RawSelect(failing).rows(connection, SessionRow)
    assert type(raw.value) is type(expected.value)
    assert type(raw.value.orig) is type(expected.value.orig)
    assert "no_such_column" in str(raw.value)
    ledger.session(KEYS[0])  # the pool's connections are fine


def test_a_vanished_sqlite_table_is_store_unavailable(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url) as ledger:
        ledger.resolve(KEYS[0], at=T0)
        with ledger.store.database.engine.connect() as connection:
            connection.exec_driver_sql("DROP TABLE ledger_entries")
            connection.commit()
        with pytest.raises(StoreUnavailable):
            ledger.transcript(KEYS[0])
