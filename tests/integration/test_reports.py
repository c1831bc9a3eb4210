"""The status report on a small gateway day, through the API, HTTP and CLI;
migration 0003, which dates the receipts the report counts late events from; and
migration 0005, which gives runs the agent and channel the report groups by."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from sessionledger.domain.values import KeyShape
from sessionledger.infrastructure.cli import app as cli
from sessionledger.infrastructure.http import create_app
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.maintenance.shadow import Shadow
from sessionledger.infrastructure.schema import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from sessionledger.projections import reports
from sessionledger.projections.tables import SHADOW, TABLES
from tests.helpers import assert_replay_equals_live

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
TELEGRAM = "agent:main:telegram:direct:4242"
SLACK = "agent:ops:slack:channel:c01"
CRON = "cron:nightly-digest"


class StoreClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def fact(key: str, sid: str, kind: str, minute: float, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "eventId": fields.pop("eventId"),
        "sessionKey": key,
        "sessionId": sid,
        "occurredAt": (T0 + timedelta(minutes=minute)).isoformat(),
        "writer": fields.pop("writer", "runner"),
        **fields,
    }


@pytest.fixture
def day(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    """09:00 three keys open; runs end, fail and time out; /reset fences a late error."""
    clock = StoreClock()
    monkeypatch.setattr("sessionledger.domain.conversation.utcnow", clock)
    ledger = Ledger.open(database_url, clock=lambda: T0 + timedelta(minutes=120))

    def at(minute: float) -> None:
        clock.now = T0 + timedelta(minutes=minute)

    for key, sid in ((TELEGRAM, "tg1"), (SLACK, "sl1"), (CRON, "cr1")):
        ledger.resolve(key, at=T0, session_id=sid)
    at(1)
    ledger.record(
        [
            fact(
                TELEGRAM,
                "tg1",
                "run.started",
                1,
                eventId="a",
                runId="t1",
                trigger="user",
                model="opus",
                provider="anthropic",
            ),
            fact(
                SLACK,
                "sl1",
                "run.started",
                1,
                eventId="b",
                runId="s1",
                trigger="user",
                model="gpt",
                provider="openai",
            ),
            fact(CRON, "cr1", "run.started", 1, eventId="c", runId="c1", trigger="cron"),
        ]
    )
    at(30)  # outside a 60-minute window at 11:00
    ledger.record(
        [
            fact(
                TELEGRAM,
                "tg1",
                "run.ended",
                30,
                eventId="d",
                runId="t1",
                outcome="done",
                usage={"input": 1000, "output": 50},
            )
        ]
    )
    at(70)
    ledger.record(
        [
            fact(
                TELEGRAM,
                "tg1",
                "transcript.appended",
                70,
                eventId="e",
                writer="runner",
                entry={
                    "id": "m1",
                    "role": "assistant",
                    "content": "hi",
                    "timestamp": (T0 + timedelta(minutes=70)).isoformat(),
                },
            ),
            fact(
                TELEGRAM,
                "tg1",
                "run.started",
                70,
                eventId="f",
                runId="t2",
                trigger="user",
                model="opus",
                provider="anthropic",
            ),
            fact(
                CRON,
                "cr1",
                "run.ended",
                70,
                eventId="g",
                runId="c1",
                outcome="timeout",
                usage={"input": 10},
            ),
        ]
    )
    at(80)
    ledger.reset(SLACK, expected_session_id="sl1", session_id="sl2", at=T0 + timedelta(minutes=80))
    at(90)
    ledger.record(
        [
            fact(
                SLACK,
                "sl1",
                "run.errored",
                79,
                eventId="h",
                runId="s1",
                error="rate limited",
                errorKind="provider",
                usage={"input": 200},
            )
        ]
    )
    at(100)
    ledger.record(
        [
            fact(
                TELEGRAM,
                "tg1",
                "run.ended",
                100,
                eventId="i",
                runId="t2",
                outcome="done",
                usage={"input": 300, "output": 30, "cacheRead": 7},
            )
        ]
    )
    at(105)
    ledger.record(
        [
            fact(
                SLACK,
                "sl2",
                "run.started",
                105,
                eventId="j",
                runId="s2",
                trigger="user",
                model="gpt",
                provider="openai",
            )
        ]
    )
    try:
        yield ledger
    finally:
        ledger.close()


def test_a_day_of_gateway_traffic(day: Ledger) -> None:
    report = day.status_report(window_minutes=60, stuck_after_minutes=10)
    assert report.generated_at == T0 + timedelta(minutes=120)
    assert report.window_start == T0 + timedelta(minutes=60)
    assert (report.sessions, report.by_status) == (3, {"done": 1, "running": 1, "timeout": 1})
    ((active),) = report.active_runs
    assert (active.run_id, active.session_key, active.current) == ("s2", SLACK, True)
    assert active.age_ms == 15 * 60_000 and active.stuck
    assert [r.run_id for r in report.stuck_runs] == ["s2"]

    total = report.window_runs  # t2 done, c1 timeout, s1 failed (late); t1 ended at 09:30
    assert (total.runs, total.done, total.failed, total.timeout) == (3, 1, 1, 1)
    assert (total.input_tokens, total.output_tokens, total.cache_read_tokens) == (510, 30, 7)
    models = {line.name: (line.runs, line.failed, line.input_tokens) for line in report.by_model}
    assert models == {"opus": (1, 0, 300), "gpt": (1, 1, 200), None: (1, 0, 10)}
    agents = {line.name: (line.runs, line.timeout) for line in report.by_agent}
    assert agents == {"main": (1, 0), "ops": (1, 0), None: (1, 1)}
    channels = {line.name: line.runs for line in report.by_channel}
    assert channels == {"telegram": 1, "slack": 1, "cron": 1}
    assert [line.name for line in report.by_provider] == ["anthropic", "openai", None]
    assert [(f.run_id, f.status, f.error) for f in report.recent_failures] == [
        ("s1", "failed", "rate limited"),
        ("c1", "timeout", None),
    ]

    assert report.late_events == 1
    ((late),) = report.recent_late_events
    assert (late.session_key, late.session_id, late.current_session_id) == (SLACK, "sl1", "sl2")
    assert late.recorded_at == T0 + timedelta(minutes=90)
    # tg1 has an assistant entry; sl1 (archived), sl2 and cr1 have none.
    assert report.not_resumable == {"archived": 1, "current": 2}
    assert sorted(r.session_id for r in report.not_resumable_sessions) == ["cr1", "sl2"]
    assert {b.name: b.sessions for b in report.sessions_by_agent} == {"main": 1, "ops": 1, None: 1}

    wide = day.status_report(window_minutes=180, stuck_after_minutes=30)
    assert wide.window_runs.runs == 4 and wide.stuck_runs == []
    assert_replay_equals_live(day)


def test_usage_is_the_same_when_sqlite_gives_up_walking_the_index(
    day: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    for window in (60, 180):
        walked = day.status_report(window_minutes=window)
        monkeypatch.setattr(
            "sessionledger.projections.reports.WALK_BUDGET", 0
        )  # DISTINCT over the window
        assert day.status_report(window_minutes=window) == walked
        monkeypatch.undo()


def test_http_and_cli(day: Ledger, database_url: str) -> None:
    client = TestClient(create_app(day))
    body = client.get(
        "/v1/reports/status", params={"windowMinutes": 60, "stuckAfterMinutes": 10}
    ).json()
    assert body["windowMinutes"] == 60 and body["lateEvents"] == 1
    assert body["windowRuns"]["runs"] == 3 and body["stuckRuns"][0]["runId"] == "s2"
    assert {line["name"] for line in body["byChannel"]} == {"telegram", "slack", "cron"}
    assert client.get("/v1/reports/status", params={"windowMinutes": 0}).status_code == 422

    runner = CliRunner()
    out = runner.invoke(cli, ["status", "--db", database_url, "--window", "3h", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    # The CLI reports at the wall clock, so only the shape is fixed here.
    assert report["windowMinutes"] == 180 and report["sessions"] == 3
    assert {"byModel", "byAgent", "lateEvents", "notResumable"} <= set(report)
    out = runner.invoke(cli, ["status", "--db", database_url, "--window", "3h"])
    assert out.exit_code == 0, out.output
    for title in (
        "sessions by status",
        "active runs",
        "runs ended in the last 3 h",
        "late events fenced",
        "generations not resumable",
        "per agent and channel",
    ):
        assert title in out.output, title
    out = runner.invoke(cli, ["status", "--db", database_url, "--window", "later"])
    assert out.exit_code == 1 and "--window" in out.output


@contextmanager
def statements_on(engine: Engine, table: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements (with their parameters) run through `engine` on `table` inside
    the block."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if table in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def plan(connection: Connection, statement: str, parameters: Any = ()) -> str:
    """SQLite's query plan of a statement, its steps joined by " | "."""
    rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return " | ".join(row[-1] for row in rows)


def index_definition(connection: Connection, name: str) -> str:
    if connection.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_schema WHERE name = ?"
        return str(connection.exec_driver_sql(query, (name,)).scalar_one())
    query = "SELECT indexdef FROM pg_indexes WHERE indexname = %(name)s"
    return str(connection.exec_driver_sql(query, {"name": name}).scalar_one())


def test_late_events_are_read_from_an_index_of_archived_receipts_only(
    day: Ledger, database_url: str
) -> None:
    """Migration 0008: receipts are indexed by time only where the report reads them.
    The index is partial (every other receipt costs no index entry), and on SQLite each
    report query over receipts is a search of it, not a scan of every receipt."""
    name = "ix_ledger_receipts_archived_recorded_at"
    engine = day.store.database.engine
    with statements_on(engine, "ledger_receipts") as seen:
        report = day.status_report(window_minutes=60)
    assert report.late_events == 1 and len(seen) == 2  # the count and the list
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            for statement, parameters in seen:
                searched = f"SEARCH ledger_receipts USING INDEX {name}"
                assert searched in plan(connection, statement, parameters)
        ddl = index_definition(connection, name)
    assert "WHERE" in ddl and "'archived'" in ddl


def test_running_runs_are_read_from_a_partial_index_of_their_own(
    day: Ledger, database_url: str
) -> None:
    """Migration 0009: the report's active runs and `recover`'s stale runs read an index
    of the running runs alone (partial: an ended run has no entry). On SQLite the active
    runs are one search of it, covering, in order (no row lookups, no sort), and recover
    searches it by start time."""
    report = day.status_report(window_minutes=60)
    assert report.active_runs
    engine = day.store.database.engine
    with statements_on(engine, "ledger_runs") as recovering:
        assert day.recover(timedelta(days=3650)).closed == 0  # none that old: reads only
    assert len(recovering) == 1
    active = str(reports.running_runs(TABLES.runs).statement.compile(dialect=engine.dialect))
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            name = "ix_ledger_runs_running_covering"
            assert plan(connection, active) == (
                f"SEARCH ledger_runs USING COVERING INDEX {name} (status=?)"
            )
            stale = plan(connection, *recovering[0])
            assert f"SEARCH ledger_runs USING INDEX {name}" in stale
            assert "TEMP B-TREE" not in stale
        else:
            name = "ix_ledger_runs_running"
        ddl = index_definition(connection, name)
        total = connection.exec_driver_sql("SELECT count(*) FROM ledger_runs").scalar_one()
    assert "WHERE" in ddl and "'running'" in ddl
    assert total > len(report.active_runs)  # ended runs, which the index leaves out


def test_migration_0003_dates_existing_receipts_from_their_events(
    day: Ledger, database_url: str
) -> None:
    log = {position: event.timestamp for position, event in day.log(limit=10_000)}
    report = day.status_report(window_minutes=60)
    assert report.late_events == 1
    day.close()
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        assert current_revision(engine) == "0002"
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            receipts = connection.execute(
                select(TABLES.receipts.c.position, TABLES.receipts.c.recorded_at)
            ).all()
    finally:
        engine.dispose()
    assert len(receipts) == len(log)
    assert {position: recorded for position, recorded in receipts} == log
    with Ledger.open(database_url, clock=day.clock) as reopened:
        assert_replay_equals_live(reopened)
        # The late event the fixture fenced is in the window again, dated from its event.
        assert reopened.status_report(window_minutes=60) == report


# Every branch of KeyShape.parse: each part one of these, one to four parts; and a few more.
SHAPED_KEYS = [
    *(
        key
        for n in range(1, 5)
        for parts in itertools.product(("agent", "cron", "a", ""), repeat=n)
        if (key := ":".join(parts))
    ),
    "hook:deploy",
    "hook",
    "AGENT:main:telegram:direct",
    "agent:ünï:çhännel:dm:1",
    TELEGRAM,
]


def run_shapes(connection: Connection) -> dict[str, dict[str, tuple[str | None, str | None]]]:
    return {
        runs.name: {
            run_id: (agent, channel)
            for run_id, agent, channel in connection.execute(
                select(runs.c.run_id, runs.c.agent, runs.c.channel)
            )
        }
        for runs in (TABLES.runs, SHADOW.runs)
    }


def test_migration_0005_backfills_run_agent_and_channel_as_a_rebuild_does(
    database_url: str,
) -> None:
    with Ledger.open(database_url) as ledger:
        started = []
        for i, key in enumerate(SHAPED_KEYS):
            sid = ledger.resolve(key, at=T0).session.session_id
            started.append(
                fact(key, sid, "run.started", 0, eventId=f"s{i}", runId=f"r{i}", trigger="user")
            )
        ledger.record(started)
        ended = fact(SHAPED_KEYS[0], started[0]["sessionId"], "run.ended", 1, eventId="end")
        ledger.record([{**ended, "runId": "r0", "outcome": "done"}])  # and a deleted key's:
        ledger.delete(SHAPED_KEYS[1], expected_session_id=started[1]["sessionId"])
        ledger.rebuild()
        Shadow(ledger.store).fold()  # rows in the shadow tables too (as a verify leaves them)
        with ledger.store.database.reading() as connection:
            rebuilt = run_shapes(connection)
    assert rebuilt["ledger_runs"] == {
        f"r{i}": (KeyShape.parse(key).agent, KeyShape.parse(key).channel)
        for i, key in enumerate(SHAPED_KEYS)
    }
    assert rebuilt["ledger_runs_shadow"] == rebuilt["ledger_runs"]

    engine = create_engine(database_url, poolclass=NullPool)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            assert run_shapes(connection) == rebuilt
    finally:
        engine.dispose()
    with Ledger.open(database_url) as reopened:
        assert_replay_equals_live(reopened)
