"""Status report for operators, answered from indexed read models (never a log replay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from projections.rows import CAMEL, RunRow
from projections.tables import ReadModelTables


@dataclass(frozen=True, slots=True)
class StatusReport:
    __pydantic_config__ = CAMEL

    generated_at: datetime
    sessions: int
    by_status: dict[str, int] = field(hash=False)
    active_runs: list[RunRow] = field(hash=False)
    stuck_runs: list[RunRow] = field(hash=False)
    stuck_after_minutes: int


def status_report(
    connection: Connection, tables: ReadModelTables, *, now: datetime, stuck_after: timedelta
) -> StatusReport:
    s, g, r = tables.sessions, tables.generations, tables.runs
    by_status = {
        status: count
        for status, count in connection.execute(
            select(g.c.status, func.count())
            .select_from(s.join(g, g.c.session_id == s.c.session_id))
            .group_by(g.c.status)
        )
    }
    active = [
        RunRow(**row._mapping)
        for row in connection.execute(
            select(r).where(r.c.status == "running").order_by(r.c.started_at)
        )
    ]
    stuck = [run for run in active if now - run.started_at > stuck_after]
    return StatusReport(
        generated_at=now,
        sessions=sum(by_status.values()),
        by_status=by_status,
        active_runs=active,
        stuck_runs=stuck,
        stuck_after_minutes=int(stuck_after.total_seconds() // 60),
    )
