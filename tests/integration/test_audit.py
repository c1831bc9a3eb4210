"""Audit replay over a realistic multi-generation incident.

The incident, recorded through the public API with a controlled store clock (so every
recordedAt, and every "arrived … after the reset", is known exactly):

  s1  opened; r1 runs and ends; r2 starts and is still running when /reset rotates
      the key to s2; r2's error arrives 10 s after the reset (it happened 5 s before
      it, by the runner's clock): fenced onto s1.
  s2  r3 runs; the ingress delivers the same user message twice under fresh eventIds;
      r3's end is reported before its start (a skewed runner clock, clamped).
      An idle rollover rotates to s3; a heartbeat append for s2 arrives late.
  s3  r4 starts and never ends; a cron writer's clock runs 10 minutes ahead.

After every step the live rows are snapshotted with their position, and the audit
"as of" that position (and that time) must reconstruct exactly those rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sessionledger.domain.errors import InvalidEvent, SessionDeleted, UnknownSession
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.infrastructure.cli import app as cli
from sessionledger.infrastructure.http import create_app
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.projections.audit import AuditReport, to_markdown
from sessionledger.projections.rows import GenerationRow, RunRow, SessionView
from tests.helpers import assert_replay_equals_live

KEY = "agent:main:telegram:direct:4242"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
IDLE = FreshnessPolicy(mode="idle", idle_minutes=30)


class StoreClock:
    """Stands in for the store's clock (recordedAt) while the incident is recorded."""

    def __init__(self) -> None:
        self.now = T0

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now

    def __call__(self) -> datetime:
        return self.now


def t(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


_ids = itertools.count()


def fact(kind: str, sid: str, occurred: float, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "eventId": fields.pop("eventId", f"ev{next(_ids)}"),
        "sessionKey": KEY,
        "sessionId": sid,
        "occurredAt": t(occurred),
        "writer": fields.pop("writer", "runner"),
        **fields,
    }


@dataclass
class Snapshot:
    step: str
    position: int
    recorded_at: datetime
    session: SessionView | None
    generations: list[GenerationRow]
    runs: list[RunRow]


@dataclass
class Incident:
    ledger: Ledger
    url: str
    snapshots: list[Snapshot]
    positions: dict[str, int]  # eventId -> position


def live_rows(ledger: Ledger) -> tuple[SessionView | None, list[GenerationRow], list[RunRow]]:
    try:
        session: SessionView | None = ledger.session(KEY)
    except SessionDeleted:
        session = None
    generations = ledger.generations(KEY)
    runs = sorted(
        (run for g in generations for run in ledger.runs(g.session_id)),
        key=lambda r: r.started_position,
    )
    return session, generations, runs


@pytest.fixture
def incident(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Incident]:
    clock = StoreClock()
    monkeypatch.setattr("sessionledger.domain.conversation.utcnow", clock)
    ledger = Ledger.open(database_url, clock=clock)
    snapshots: list[Snapshot] = []
    positions: dict[str, int] = {}

    def step(name: str, seconds: float, action: Any) -> Any:
        clock.at(seconds)
        result = action()
        if isinstance(result, list):
            for r in result:
                assert r.outcome in {"applied", "archived"}, r
                positions[r.event_id] = r.position
        session, generations, runs = live_rows(ledger)
        snapshots.append(Snapshot(name, ledger.position(), clock.now, session, generations, runs))
        return result

    rec = ledger.record
    step("open s1", 0, lambda: ledger.resolve(KEY, at=T0, session_id="s1"))
    step(
        "r1 starts",
        1,
        lambda: rec(
            [
                fact(
                    "run.started",
                    "s1",
                    1,
                    runId="r1",
                    trigger="user",
                    model="opus",
                    provider="anthropic",
                    eventId="r1-start",
                ),
                fact(
                    "transcript.appended",
                    "s1",
                    1,
                    writer="ingress",
                    entry={"id": "m1", "role": "user", "content": "hi", "timestamp": t(1)},
                ),
            ]
        ),
    )
    step(
        "r1 ends",
        5,
        lambda: rec(
            [
                fact(
                    "transcript.appended",
                    "s1",
                    4,
                    entry={
                        "id": "m2",
                        "parentId": "m1",
                        "role": "assistant",
                        "content": "hello",
                        "timestamp": t(4),
                    },
                ),
                fact(
                    "run.ended",
                    "s1",
                    5,
                    runId="r1",
                    outcome="done",
                    eventId="r1-end",
                    usage={"input": 100, "output": 20},
                ),
            ]
        ),
    )
    step(
        "r2 starts",
        10,
        lambda: rec(
            [fact("run.started", "s1", 10, runId="r2", trigger="heartbeat", eventId="r2-start")]
        ),
    )
    step(
        "reset to s2",
        60,
        lambda: ledger.reset(
            KEY, expected_session_id="s1", session_id="s2", at=T0 + timedelta(seconds=60)
        ),
    )
    step(
        "r2 errors late",
        70,
        lambda: rec(
            [
                fact(
                    "run.errored",
                    "s1",
                    55,
                    runId="r2",
                    error="boom",
                    errorKind="provider",
                    eventId="r2-error",
                )
            ]
        ),
    )
    step(
        "r3 starts",
        80,
        lambda: rec(
            [fact("run.started", "s2", 80, runId="r3", trigger="user", eventId="r3-start")]
        ),
    )
    step(
        "duplicate delivery",
        81,
        lambda: rec(
            [
                fact(
                    "transcript.appended",
                    "s2",
                    81,
                    writer="ingress",
                    eventId="dup-a",
                    entry={"id": "m3", "role": "user", "content": "again?", "timestamp": t(81)},
                ),
                fact(
                    "transcript.appended",
                    "s2",
                    82,
                    writer="ingress",
                    eventId="dup-b",
                    entry={
                        "id": "m3-retry",
                        "parentId": "m3",
                        "role": "user",
                        "content": "again?",
                        "timestamp": t(82),
                    },
                ),
            ]
        ),
    )
    step(
        "r3 ends before it started",
        90,
        lambda: rec([fact("run.ended", "s2", 70, runId="r3", outcome="done", eventId="r3-end")]),
    )
    step(
        "idle rollover to s3",
        4000,
        lambda: ledger.resolve(KEY, at=T0 + timedelta(seconds=4000), policy=IDLE, session_id="s3"),
    )
    step(
        "late heartbeat on s2",
        4003,
        lambda: rec(
            [
                fact(
                    "transcript.appended",
                    "s2",
                    4002,
                    writer="heartbeat",
                    eventId="late-hb",
                    entry={"id": "hb", "role": "system", "content": "tick", "timestamp": t(4002)},
                )
            ]
        ),
    )
    step(
        "r4 starts",
        4010,
        lambda: rec(
            [fact("run.started", "s3", 4010, runId="r4", trigger="user", eventId="r4-start")]
        ),
    )
    step(
        "cron clock ahead",
        4020,
        lambda: rec(
            [
                fact(
                    "overrides.changed",
                    "s3",
                    4620,
                    writer="cron",
                    eventId="cron-skew",
                    overrides={"model": "sonnet"},
                )
            ]
        ),
    )
    try:
        yield Incident(ledger, database_url, snapshots, positions)
    finally:
        ledger.close()


def by_event(report: AuditReport, event_id: str) -> Any:
    (entry,) = [e for e in report.entries if e.event_id == event_id]
    return entry


def test_every_event_in_log_order_with_what_it_did(incident: Incident) -> None:
    ledger, positions = incident.ledger, incident.positions
    report = ledger.audit(KEY)
    assert report.session_key == KEY and report.run_id is None
    log_positions = [p for p, e in ledger.log(limit=10_000) if e.session_key == KEY]
    assert [e.position for e in report.entries] == log_positions
    assert report.through_position == log_positions[-1]
    assert [g.session_id for g in report.summary.generations] == ["s1", "s2", "s3"]
    assert [g.state for g in report.summary.generations] == ["archived", "archived", "current"]
    assert report.summary.current_session_id == "s3" and not report.summary.deleted
    assert report.summary.runs == {"done": 2, "failed": 1, "running": 1}
    assert report.summary.outcomes == {"applied": len(log_positions) - 2, "archived": 2}

    late = by_event(report, "r2-error")
    assert (late.position, late.type, late.session_id, late.run_id, late.writer) == (
        positions["r2-error"],
        "run.errored",
        "s1",
        "r2",
        "runner",
    )
    assert late.occurred_at == T0 + timedelta(seconds=55)
    assert late.recorded_at == T0 + timedelta(seconds=70)
    assert late.outcome == "archived"
    assert late.did == (
        "applied to archived generation s1 (arrived 10.0 s after the reset; "
        "by the reporter's clock it happened 5.0 s before the reset)"
    )
    assert (late.arrived_after_ms, late.occurred_after_ms) == (10_000, -5_000)
    # The current row is s2 before and after: the fence held.
    assert late.before is not None and late.after == late.before
    assert late.after.session_id == "s2"
    # The archived generation is the row that changed.
    assert late.generation_before.status == "running"
    assert late.generation_before.active_run_ids == ("r2",)
    assert late.generation_after.status == "failed"
    assert late.generation_after.active_run_ids == ()
    assert late.generation_after.late_events == 1
    assert late.run_after.status == "failed" and late.run_after.late is True

    started = by_event(report, "r1-start")
    assert (started.outcome, started.did) == ("applied", "applied to current")
    assert started.before.status == "new" and started.after.status == "running"
    assert started.after.active_run_ids == ("r1",)
    ended = by_event(report, "r1-end")
    assert ended.before.status == "running" and ended.after.status == "done"
    assert ended.run_after.status == "done" and ended.run_after.input_tokens == 100
    assert ended.after.input_tokens == 100

    rotated = next(e for e in report.entries if e.type == "session.rotated")
    assert rotated.did == "rotated to s2 (reset)"
    assert rotated.recorded_at == T0 + timedelta(seconds=60)
    opened = next(
        e for e in report.entries if e.type == "generation.opened" and e.session_id == "s2"
    )
    assert opened.before.session_id == "s1" and opened.after.session_id == "s2"

    heartbeat = by_event(report, "late-hb")
    assert heartbeat.outcome == "archived" and heartbeat.session_id == "s2"
    assert heartbeat.did.startswith(
        "applied to archived generation s2 (arrived 3.0 s after the rollover"
    )
    assert heartbeat.after.session_id == "s3"


def test_anomalies_are_called_out(incident: Incident) -> None:
    report = incident.ledger.audit(KEY)
    kinds = [a.kind for a in report.anomalies]
    assert report.summary.anomalies == {
        "late-event": 2,
        "end-before-start": 1,
        "possible-duplicate": 1,
        "clock-skew": 1,
        "run-never-ended": 1,
    }, kinds
    positions = incident.positions
    late = [a for a in report.anomalies if a.kind == "late-event"]
    assert [a.positions for a in late] == [[positions["r2-error"]], [positions["late-hb"]]]
    assert [a.run_id for a in late] == ["r2", None]
    (never,) = [a for a in report.anomalies if a.kind == "run-never-ended"]
    assert never.run_id == "r4" and never.positions == [positions["r4-start"]]
    (skew,) = [a for a in report.anomalies if a.kind == "clock-skew"]
    assert skew.positions == [positions["cron-skew"]]
    assert "by cron" in skew.message and "+10 min 0 s" in skew.message
    (dup,) = [a for a in report.anomalies if a.kind == "possible-duplicate"]
    assert dup.positions == [positions["dup-b"]] and "repeats entry m3" in dup.message
    (clamped,) = [a for a in report.anomalies if a.kind == "end-before-start"]
    assert clamped.run_id == "r3" and "10 s before the run started" in clamped.message.replace(
        "10.0 s", "10 s"
    )
    assert any("neither is in the log" in note for note in report.notes)


def test_as_of_a_position_or_time_reconstructs_the_rows_as_they_stood(incident: Incident) -> None:
    ledger = incident.ledger
    first = ledger.audit(KEY).entries[0].position
    assert ledger.audit(KEY, position=first - 1).entries == []
    for snap in incident.snapshots:
        for report in (
            ledger.audit(KEY, position=snap.position),
            ledger.audit(KEY, as_of=snap.recorded_at),
        ):
            assert report.through_position == snap.position, snap.step
            assert report.state.session == snap.session, snap.step
            assert report.state.generations == snap.generations, snap.step
            assert report.state.runs == snap.runs, snap.step
    # Between two steps, as of a time holds the earlier step's rows.
    before_reset = next(s for s in incident.snapshots if s.step == "r2 starts")
    halfway = ledger.audit(KEY, as_of=before_reset.recorded_at + timedelta(seconds=30))
    assert halfway.state.session == before_reset.session
    assert halfway.state.session is not None and halfway.state.session.status == "running"
    assert_replay_equals_live(ledger)


def test_one_run(incident: Incident) -> None:
    report = incident.ledger.audit(KEY, run_id="r2")
    assert [(e.type, e.outcome) for e in report.entries] == [
        ("run.started", "applied"),
        ("run.errored", "archived"),
    ]
    assert [r.run_id for r in report.state.runs] == ["r2"]
    assert [g.session_id for g in report.state.generations] == ["s1"]
    assert {a.kind for a in report.anomalies} == {"late-event"}
    assert report.summary.runs == {"failed": 1}
    with pytest.raises(InvalidEvent, match="runId"):
        incident.ledger.audit(KEY, run_id="nope")
    with pytest.raises(InvalidEvent, match="asOf"):
        incident.ledger.audit(KEY, position=3, as_of=T0)
    with pytest.raises(UnknownSession):
        incident.ledger.audit("agent:main:nobody")


def test_markdown_incident_report(incident: Incident) -> None:
    text = to_markdown(incident.ledger.audit(KEY))
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        f"# Incident report: `{KEY}`",
        "## Summary",
        "### Generations",
        "## Anomalies",
        "## Timeline",
        f"## Rows as of position {incident.snapshots[-1].position}",
        "## Notes",
    ]
    assert "- **Generations**: 3 — `s1` archived, `s2` archived, `s3` current" in text
    assert "- **Runs**: 4 — done 2, failed 1, running 1" in text
    for kind in (
        "late-event",
        "run-never-ended",
        "clock-skew",
        "end-before-start",
        "possible-duplicate",
    ):
        assert f"- **{kind}** (position " in text
    timeline = text.split("## Timeline")[1].split("##")[0]
    rows = [line for line in timeline.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(incident.ledger.audit(KEY).entries)  # header + one per event
    assert "arrived 10.0 s after the reset" in timeline
    assert "Clock skew threshold: 1 min 0 s" in text


def test_http_and_cli(incident: Incident) -> None:
    client = TestClient(create_app(incident.ledger))
    path = f"/v1/sessions/{KEY}/audit"
    body = client.get(path).json()
    assert body["sessionKey"] == KEY and body["summary"]["currentSessionId"] == "s3"
    late = next(e for e in body["entries"] if e["eventId"] == "r2-error")
    assert late["arrivedAfterMs"] == 10_000 and late["generationAfter"]["status"] == "failed"
    position = incident.positions["r2-start"]
    as_of = client.get(path, params={"position": position}).json()
    assert as_of["throughPosition"] == position
    assert as_of["state"]["session"]["activeRunIds"] == ["r2"]
    by_time = client.get(path, params={"asOf": (T0 + timedelta(seconds=65)).isoformat()}).json()
    assert by_time["state"]["session"]["sessionId"] == "s2"
    assert by_time["state"]["session"]["status"] == "new"
    run = client.get(path, params={"runId": "r4"}).json()
    assert [e["type"] for e in run["entries"]] == ["run.started"]
    markdown = client.get(path, params={"format": "markdown"})
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith(f"# Incident report: `{KEY}`")
    assert client.get(path, params={"asOf": "2026-11-21T10:00:00"}).status_code == 422
    assert client.get(path, params={"runId": "nope"}).status_code == 422
    assert client.get(path, params={"format": "pdf"}).status_code == 422

    runner = CliRunner()
    url = incident.url
    out = runner.invoke(cli, ["audit", KEY, "--db", url, "--format", "markdown"])
    assert out.exit_code == 0, out.output
    assert out.output == to_markdown(incident.ledger.audit(KEY))
    out = runner.invoke(cli, ["audit", KEY, "--db", url, "--run", "r2", "--json"])
    assert out.exit_code == 0, out.output
    assert '"runId": "r2"' in out.output
    out = runner.invoke(cli, ["audit", KEY, "--db", url, "--position", str(position)])
    assert out.exit_code == 0 and "as of position" in out.output, out.output
    out = runner.invoke(cli, ["audit", KEY, "--db", url, "--as-of", "2026-11-21T10:01:05Z"])
    assert out.exit_code == 0 and "anomalies" in out.output, out.output
    out = runner.invoke(cli, ["audit", KEY, "--db", url, "--as-of", "soon"])
    assert out.exit_code == 1 and "--as-of" in out.output
