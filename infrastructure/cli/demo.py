"""`sessionledger demo`: a scripted gateway incident against the store, then its rows,
its status report and the audit timeline that shows the late error fenced off."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.infrastructure.cli.common import (
    DbOption,
    JsonOption,
    app,
    print_json,
    reported_failures,
    shown_url,
)
from sessionledger.infrastructure.cli.views import audit_table, status_tables
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.projections.audit import AuditEntry
from sessionledger.projections.reports import StatusReport
from sessionledger.projections.rows import SessionView


@dataclass(frozen=True)
class DemoReport:
    db: str
    keys: tuple[str, ...]
    sessions: tuple[SessionView, ...]
    late_event: dict[str, Any]
    idle_rollover: dict[str, Any]
    status: StatusReport
    audit: list[AuditEntry]


def run_demo(ledger: Ledger, tag: str, start: datetime) -> DemoReport:
    """A small gateway incident, through the Python API only."""
    telegram = f"agent:main:telegram:direct:demo-{tag}"
    slack = f"agent:ops:slack:channel:demo-{tag}"
    ids = iter(range(1, 1000))

    def at(minutes: float) -> datetime:
        return start + timedelta(minutes=minutes)

    def fact(kind: str, key: str, session_id: str, minutes: float, **more: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "eventId": f"demo-{tag}-{next(ids)}",
            "sessionKey": key,
            "sessionId": session_id,
            "occurredAt": at(minutes).isoformat(),
            "writer": "runner",
            **more,
        }

    def entry(entry_id: str, role: str, content: str, minutes: float) -> dict[str, Any]:
        return {"id": entry_id, "role": role, "content": content, "timestamp": at(minutes)}

    # 1. A user writes on Telegram; a run starts and is still in flight ...
    s1 = ledger.resolve(telegram, at=at(0)).session.session_id
    ledger.record(
        [
            fact("run.started", telegram, s1, 0, runId=f"run-{tag}-1", trigger="user"),
            fact("transcript.appended", telegram, s1, 0, entry=entry("u1", "user", "hi", 0)),
        ]
    )
    # 2. ... when the user types /reset: the key moves to a new generation (CAS on s1),
    reset = ledger.reset(telegram, reason="reset", expected_session_id=s1, at=at(1))
    # 3. and the stuck run's error arrives afterwards. It lands on s1, archived.
    (late,) = ledger.record(
        [fact("run.errored", telegram, s1, 2, runId=f"run-{tag}-1", error="upstream timeout")]
    )
    s2 = reset.session_id
    # 4. A normal turn on the new generation, and a CLI resume binding.
    ledger.record(
        [
            fact(
                "run.started",
                telegram,
                s2,
                3,
                runId=f"run-{tag}-2",
                trigger="user",
                model="claude-sonnet",
                provider="anthropic",
            ),
            fact("transcript.appended", telegram, s2, 3, entry=entry("u2", "user", "again", 3)),
            fact(
                "transcript.appended",
                telegram,
                s2,
                4,
                entry={**entry("a2", "assistant", "hello again", 4), "parentId": "u2"},
            ),
            fact(
                "run.ended",
                telegram,
                s2,
                4,
                runId=f"run-{tag}-2",
                outcome="done",
                usage={"input": 1200, "output": 80},
            ),
        ]
    )
    ledger.set_binding(telegram, "claude-cli", f"cli-{tag}", at=at(5))
    # 5. Three hours later the user is back: an idle rollover keeps bindings and history.
    idle = ledger.resolve(
        telegram, at=at(180), policy=FreshnessPolicy(mode="idle", idle_minutes=60)
    )
    history = ledger.transcript(telegram, lineage=True)

    # 6. A second conversation that heartbeat and cron writers append into while it lives.
    s4 = ledger.resolve(slack, at=at(0)).session.session_id
    ledger.resolve(slack, at=at(30), interaction="heartbeat")
    ledger.record(
        [
            fact(
                "run.started",
                slack,
                s4,
                30,
                runId=f"run-{tag}-hb",
                trigger="heartbeat",
                writer="heartbeat",
            ),
            fact(
                "transcript.appended",
                slack,
                s4,
                30,
                writer="heartbeat",
                entry=entry("hb1", "system", "HEARTBEAT_OK", 30),
            ),
            fact(
                "run.ended",
                slack,
                s4,
                31,
                runId=f"run-{tag}-hb",
                writer="heartbeat",
                outcome="done",
            ),
            fact(
                "run.started", slack, s4, 60, runId=f"run-{tag}-cron", trigger="cron", writer="cron"
            ),
            fact(
                "transcript.appended",
                slack,
                s4,
                60,
                writer="cron",
                entry=entry("cron1", "assistant", "daily digest: 3 open incidents", 60),
            ),
            fact(
                "run.ended",
                slack,
                s4,
                61,
                runId=f"run-{tag}-cron",
                writer="cron",
                outcome="done",
                usage={"input": 900, "output": 150},
            ),
        ]
    )

    archived = ledger.generation(s1)
    return DemoReport(
        db=shown_url(ledger.store.database.url),
        keys=(telegram, slack),
        sessions=(ledger.session(telegram), ledger.session(slack)),
        late_event={
            "eventId": late.event_id,
            "type": "run.errored",
            "outcome": late.outcome,
            "sessionId": late.session_id,
            "currentSessionId": late.current_session_id,
            "position": late.position,
            "archivedGenerationStatus": archived.status if archived else None,
        },
        idle_rollover={
            "rotated": idle.rotated,
            "reason": idle.reason,
            "previousSessionId": idle.previous_session_id,
            "sessionId": idle.session.session_id,
            "bindings": idle.session.bindings,
            "lineageEntries": len(history),
        },
        status=ledger.status_report(),
        audit=ledger.audit(telegram).entries,
    )


@app.command()
def demo(
    db: DbOption = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Use a throwaway SQLite file instead.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Script a small gateway incident through the Python API and show the rows.

    Two conversations; a run in flight when /reset rotates a session, whose late
    error lands archived on the old generation; an idle rollover that keeps
    bindings and history; heartbeat and cron writers appending into a live session.
    Each run uses its own session keys, so it can run again on the same database.
    """
    tag = uuid4().hex[:6]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    with tempfile.TemporaryDirectory(prefix="sessionledger-demo-") as scratch:
        url = str(Path(scratch) / "demo.db") if fresh else db
        with reported_failures(), Ledger.open(url) as ledger:
            report = run_demo(ledger, tag, start)
    if as_json:
        print_json(report)
        return
    show_demo(report, Console())


def show_demo(report: DemoReport, console: Console) -> None:
    table = Table(title=f"sessions in {report.db}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("sessionKey", overflow="fold")
    for column in ("sessionId", "status", "entries", "tokens", "bindings"):
        table.add_column(column, no_wrap=True)
    for row in report.sessions:
        table.add_row(
            row.session_key,
            row.session_id[:8],
            row.status,
            str(row.entry_count),
            f"{row.input_tokens}/{row.output_tokens}",
            ", ".join(row.bindings) or "-",
        )
    console.print(table)
    for part in status_tables(report.status):
        console.print(part)
    console.print(audit_table(report.audit, title=f"audit of {report.keys[0]}"))
    late = report.late_event
    console.print(
        f"late run.errored {late['eventId']}: [bold]{late['outcome']}[/] on "
        f"{str(late['sessionId'])[:8]} (now {late['archivedGenerationStatus']}); "
        f"the key is at {str(late['currentSessionId'])[:8]}",
        highlight=False,
    )
    idle = report.idle_rollover
    console.print(
        f"idle rollover: {str(idle['previousSessionId'])[:8]} -> {str(idle['sessionId'])[:8]}, "
        f"bindings kept {idle['bindings']}, {idle['lineageEntries']} entries across the lineage",
        highlight=False,
    )
