"""Rich tables for people; `--json` output bypasses these."""

from __future__ import annotations

from collections.abc import Iterable

from rich import box
from rich.table import Table

from infrastructure.cli.common import short, when
from projections.audit import AuditEntry
from projections.replay import Mismatch
from projections.reports import StatusReport
from projections.rows import EntryRow, SessionView


def sessions_table(rows: Iterable[SessionView], title: str = "sessions") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("sessionKey", overflow="fold")
    for column in ("sessionId", "status", "run", "entries", "tokens in/out", "updated"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row.session_key,
            short(row.session_id),
            row.status,
            row.last_run_id or "-",
            str(row.entry_count),
            f"{row.input_tokens}/{row.output_tokens}",
            when(row.updated_at),
        )
    return table


def status_tables(report: StatusReport) -> list[Table]:
    counts = Table(title="sessions by status", box=box.SIMPLE_HEAD, pad_edge=False)
    counts.add_column("status")
    counts.add_column("sessions", justify="right")
    for status, count in sorted(report.by_status.items()):
        counts.add_row(status, str(count))
    counts.add_row("[bold]total[/]", f"[bold]{report.sessions}[/]")
    runs = Table(
        title=f"active runs ({len(report.stuck_runs)} stuck > {report.stuck_after_minutes} min)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("runId", "sessionKey", "trigger", "started", "stuck"):
        runs.add_column(column, overflow="fold")
    stuck = {run.run_id for run in report.stuck_runs}
    for run in report.active_runs:
        runs.add_row(
            run.run_id,
            run.session_key,
            run.trigger,
            when(run.started_at),
            "yes" if run.run_id in stuck else "",
        )
    return [counts, runs]


def audit_table(entries: Iterable[AuditEntry], title: str = "audit") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("pos", "recorded", "type", "sessionId", "runId", "writer"):
        table.add_column(column, no_wrap=True)
    table.add_column("did", overflow="fold", ratio=1)
    for entry in entries:
        table.add_row(
            str(entry.position),
            entry.recorded_at.strftime("%H:%M:%S"),
            entry.type,
            short(entry.session_id),
            entry.run_id or "-",
            entry.writer,
            entry.did,
            style="yellow" if entry.outcome == "archived" else "",
        )
    return table


def transcript_table(entries: Iterable[EntryRow], title: str = "transcript") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("sessionId", "#", "id", "parent", "role", "writer", "content"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        content = entry.content if isinstance(entry.content, str) else repr(entry.content)
        table.add_row(
            short(entry.session_id),
            str(entry.seq),
            entry.entry_id,
            entry.parent_id or "-",
            entry.role,
            entry.writer,
            content if len(content) <= 200 else content[:199] + "…",
        )
    return table


def mismatches_table(mismatches: Iterable[Mismatch]) -> Table:
    table = Table(title="mismatches", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("table", "key", "field", "stored", "expected"):
        table.add_column(column, overflow="fold")
    for m in mismatches:
        table.add_row(m.table, m.key, m.field, repr(m.stored), repr(m.expected))
    return table
