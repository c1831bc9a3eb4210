"""Rich tables for people; `--json` output bypasses these."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from rich import box
from rich.markup import escape
from rich.table import Table

from sessionledger.infrastructure.cli.common import short, when
from sessionledger.projections.audit import AuditEntry, AuditReport, human
from sessionledger.projections.replay import Mismatch
from sessionledger.projections.reports import StatusReport
from sessionledger.projections.rows import EntryView, SessionView


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
    for column in ("runId", "sessionKey", "trigger", "model", "started", "age", "stuck"):
        runs.add_column(column, overflow="fold")
    for run in report.active_runs:
        runs.add_row(
            run.run_id,
            run.session_key + ("" if run.current else " [dim](archived)[/]"),
            run.trigger,
            run.model or "-",
            when(run.started_at),
            human(timedelta(milliseconds=run.age_ms)),
            "[red]yes[/]" if run.stuck else "",
        )
    window = f"last {human(timedelta(minutes=report.window_minutes))}"
    usage = Table(
        title=f"runs ended in the {window} (by the store's clock)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    usage.add_column("by")
    usage.add_column("name", overflow="fold")
    for column in ("runs", "done", "failed", "timeout", "killed", "interrupted", "tokens in/out"):
        usage.add_column(column, justify="right")
    lines = [("all", report.window_runs)]
    for label, group in (
        ("model", report.by_model),
        ("provider", report.by_provider),
        ("agent", report.by_agent),
        ("channel", report.by_channel),
    ):
        lines += [(label, line) for line in group]
    for label, line in lines:
        usage.add_row(
            label,
            "" if label == "all" else line.name or "-",
            str(line.runs),
            str(line.done),
            _alert(line.failed),
            _alert(line.timeout),
            str(line.killed),
            str(line.interrupted),
            f"{line.input_tokens}/{line.output_tokens}",
        )
    failures = Table(
        title=f"failures and timeouts in the {window} (newest {len(report.recent_failures)})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("runId", "sessionKey", "status", "error", "recorded"):
        failures.add_column(column, overflow="fold")
    for failed in report.recent_failures:
        failures.add_row(
            failed.run_id,
            failed.session_key,
            failed.status,
            (failed.error_kind + ": " if failed.error_kind else "") + (failed.error or "-"),
            when(failed.recorded_at),
        )
    late = Table(
        title=f"late events fenced in the {window}: {report.late_events}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("pos", "eventId", "sessionKey", "archived sessionId", "recorded"):
        late.add_column(column, overflow="fold")
    for event in report.recent_late_events:
        late.add_row(
            str(event.position),
            event.event_id,
            event.session_key,
            short(event.session_id),
            when(event.recorded_at),
        )
    resumable = Table(
        title="generations not resumable: "
        + (", ".join(f"{n} {state}" for state, n in sorted(report.not_resumable.items())) or "0"),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("sessionKey", "sessionId", "status", "entries", "updated"):
        resumable.add_column(column, overflow="fold")
    for row in report.not_resumable_sessions:
        resumable.add_row(
            row.session_key,
            short(row.session_id),
            row.status,
            str(row.entry_count),
            when(row.updated_at),
        )
    spread = Table(title="sessions per agent and channel", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("by", "name", "sessions"):
        spread.add_column(column, justify="right" if column == "sessions" else "left")
    for label, buckets in (
        ("agent", report.sessions_by_agent),
        ("channel", report.sessions_by_channel),
    ):
        for bucket in buckets:
            spread.add_row(label, bucket.name or "-", str(bucket.sessions))
    return [counts, runs, usage, failures, late, resumable, spread]


def _alert(count: int) -> str:
    return f"[red]{count}[/]" if count else "0"


def audit_table(entries: Iterable[AuditEntry], title: str = "audit") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("pos", "recorded", "occurred", "type", "sessionId", "runId", "writer"):
        table.add_column(column, no_wrap=True)
    table.add_column("did", overflow="fold", ratio=1)
    for entry in entries:
        table.add_row(
            str(entry.position),
            entry.recorded_at.strftime("%H:%M:%S.%f")[:-3],
            entry.occurred_at.strftime("%H:%M:%S"),
            entry.type,
            short(entry.session_id),
            entry.run_id or "-",
            entry.writer,
            entry.did,
            style="yellow" if entry.outcome == "archived" else "",
        )
    return table


def audit_tables(report: AuditReport) -> list[Table | str]:
    """Summary line, the timeline, the anomalies, and the runs as they stood."""
    summary = report.summary
    subject = (
        f"run {report.run_id} of {report.session_key}" if report.run_id else report.session_key
    )
    where = (
        "deleted"
        if summary.deleted
        else f"current {short(summary.current_session_id)}"
        if summary.current_session_id
        else "no current generation"
    )
    bound = (
        f" as of position {report.position}"
        if report.position is not None
        else f" as of {report.as_of.isoformat()}"
        if report.as_of is not None
        else ""
    )
    parts: list[Table | str] = [
        f"[bold]audit of {escape(subject)}[/]{escape(bound)}: {summary.events} events, "
        f"{len(summary.generations)} generations ({where}), {sum(summary.runs.values())} runs",
        audit_table(report.entries, title="timeline"),
    ]
    anomalies = Table(title="anomalies", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("kind", "positions", "what"):
        anomalies.add_column(column, overflow="fold")
    for anomaly in report.anomalies:
        shown = ", ".join(str(p) for p in anomaly.positions[:8])
        if len(anomaly.positions) > 8:
            shown += ", …"
        anomalies.add_row(anomaly.kind, shown, anomaly.message)
    parts.append(anomalies if report.anomalies else "no anomalies found")
    runs = Table(
        title=f"runs as of position {report.through_position}", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for column in ("runId", "sessionId", "status", "started", "ended", "late", "error"):
        runs.add_column(column, overflow="fold")
    for run in report.state.runs:
        runs.add_row(
            run.run_id,
            short(run.session_id),
            run.status,
            when(run.started_at),
            when(run.ended_at),
            "yes" if run.late else "",
            run.error or "-",
        )
    if report.state.runs:
        parts.append(runs)
    return parts


def transcript_table(entries: Iterable[EntryView], title: str = "transcript") -> Table:
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
