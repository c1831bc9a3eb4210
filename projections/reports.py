"""Status report for operators, answered from indexed read models (never a log replay).

Every number is one SQL aggregate (or a short, bounded list) over the read-model
tables; agent and channel are parsed from the session key (SPEC §2), so windowed run
figures are grouped by key in SQL and rolled up per agent/channel here.

Clocks (documented in README "Status report"):
- the window is `(now - window, now]` on the **store's clock** (recordedAt): a run
  counts when its terminal event was recorded in the window (a finished run's
  `updated_at`; a run ends once), a fenced late event when its receipt was recorded
  in it. Reporter clocks may be skewed; the store's is one clock for every writer.
- ages of active runs (and "stuck") are `now - startedAt`, the run's own start
  (reporter clock), the same `startedAt` the session row shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select

from domain.values import KeyShape
from projections.rows import CAMEL
from projections.tables import ReadModelTables

TERMINAL = ("done", "failed", "timeout", "killed", "interrupted")
LIST_LIMIT = 20  # bounded lists (recent failures, late events, sessions not resumable)


@dataclass(frozen=True, slots=True)
class ActiveRun:
    __pydantic_config__ = CAMEL

    run_id: str
    session_key: str
    session_id: str
    trigger: str
    writer: str
    model: str | None
    provider: str | None
    started_at: datetime
    age_ms: int
    current: bool  # in its key's current generation (false: archived or deleted)
    stuck: bool


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Runs that ended in the window for one value of a dimension (None: not known)."""

    __pydantic_config__ = CAMEL

    name: str | None
    runs: int = 0
    done: int = 0
    failed: int = 0
    timeout: int = 0
    killed: int = 0
    interrupted: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class _Tally:
    """A UsageLine being summed (mutable: one object per group, not one per row)."""

    __slots__ = ("runs", "statuses", "tokens")

    def __init__(self) -> None:
        self.runs = 0
        self.statuses = dict.fromkeys(TERMINAL, 0)
        self.tokens = [0, 0, 0, 0]

    def add(self, status: str, runs: int, tokens: tuple[int, int, int, int]) -> None:
        self.runs += runs
        if status in self.statuses:
            self.statuses[status] += runs
        for index, amount in enumerate(tokens):
            self.tokens[index] += amount

    def line(self, name: str | None) -> UsageLine:
        return UsageLine(
            name,
            self.runs,
            **self.statuses,
            input_tokens=self.tokens[0],
            output_tokens=self.tokens[1],
            cache_read_tokens=self.tokens[2],
            cache_write_tokens=self.tokens[3],
        )


@dataclass(frozen=True, slots=True)
class FailedRun:
    __pydantic_config__ = CAMEL

    run_id: str
    session_key: str
    session_id: str
    status: str
    error: str | None
    error_kind: str | None
    model: str | None
    provider: str | None
    ended_at: datetime | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class LateEvent:
    __pydantic_config__ = CAMEL

    event_id: str
    session_key: str
    session_id: str  # the archived (or deleted) generation it was applied to
    current_session_id: str | None
    position: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Bucket:
    __pydantic_config__ = CAMEL

    name: str | None
    sessions: int


@dataclass(frozen=True, slots=True)
class NotResumable:
    __pydantic_config__ = CAMEL

    session_key: str
    session_id: str
    status: str
    entry_count: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StatusReport:
    __pydantic_config__ = CAMEL

    generated_at: datetime
    window_minutes: int
    window_start: datetime
    stuck_after_minutes: int
    sessions: int  # live keys
    by_status: dict[str, int] = field(hash=False)
    active_runs: list[ActiveRun] = field(hash=False)
    stuck_runs: list[ActiveRun] = field(hash=False)
    # runs whose terminal event was recorded in the window
    window_runs: UsageLine = field(hash=False)
    by_model: list[UsageLine] = field(hash=False)
    by_provider: list[UsageLine] = field(hash=False)
    by_agent: list[UsageLine] = field(hash=False)
    by_channel: list[UsageLine] = field(hash=False)
    recent_failures: list[FailedRun] = field(hash=False)  # failed/timeout, newest first
    late_events: int  # fenced (applied to an archived generation) in the window
    recent_late_events: list[LateEvent] = field(hash=False)
    not_resumable: dict[str, int] = field(hash=False)  # generations by state
    not_resumable_sessions: list[NotResumable] = field(hash=False)
    sessions_by_agent: list[Bucket] = field(hash=False)
    sessions_by_channel: list[Bucket] = field(hash=False)


def status_report(
    connection: Connection,
    tables: ReadModelTables,
    *,
    now: datetime,
    stuck_after: timedelta,
    window: timedelta = timedelta(hours=1),
) -> StatusReport:
    s, g, r, rc = tables.sessions, tables.generations, tables.runs, tables.receipts
    since = now - window
    by_status = {
        status: count
        # A key's current generation is the one its session row points to; counting
        # generations by state needs no join with the 100,000 pointers.
        for status, count in connection.execute(
            select(g.c.status, func.count()).where(g.c.state == "current").group_by(g.c.status)
        )
    }

    active: list[ActiveRun] = []
    for row in connection.execute(
        select(r, g.c.state.label("generation_state"))
        .select_from(r.join(g, g.c.session_id == r.c.session_id))
        .where(r.c.status == "running")
        .order_by(r.c.started_at, r.c.run_id)
    ):
        age = now - row.started_at
        active.append(
            ActiveRun(
                run_id=row.run_id,
                session_key=row.session_key,
                session_id=row.session_id,
                trigger=row.trigger,
                writer=row.writer,
                model=row.model,
                provider=row.provider,
                started_at=row.started_at,
                age_ms=age // timedelta(milliseconds=1),
                current=row.generation_state == "current",
                stuck=age > stuck_after,
            )
        )

    in_window = and_(r.c.status != "running", r.c.updated_at > since, r.c.updated_at <= now)
    grouped = connection.execute(
        select(
            r.c.session_key,
            r.c.model,
            r.c.provider,
            r.c.status,
            func.count(),
            func.coalesce(func.sum(r.c.input_tokens), 0),
            func.coalesce(func.sum(r.c.output_tokens), 0),
            func.coalesce(func.sum(r.c.cache_read_tokens), 0),
            func.coalesce(func.sum(r.c.cache_write_tokens), 0),
        )
        .where(in_window)
        .group_by(r.c.session_key, r.c.model, r.c.provider, r.c.status)
    ).all()
    tally = _Tally()
    tallies: dict[str, dict[str | None, _Tally]] = {
        "model": {},
        "provider": {},
        "agent": {},
        "channel": {},
    }
    for key, model, provider, status, runs, *sums in grouped:
        tokens = (int(sums[0]), int(sums[1]), int(sums[2]), int(sums[3]))
        shape = KeyShape.parse(key)  # grouped by key: each key comes once per combination
        tally.add(status, runs, tokens)
        for name, value in (
            ("model", model),
            ("provider", provider),
            ("agent", shape.agent),
            ("channel", shape.channel),
        ):
            lines = tallies[name]
            line = lines.get(value)
            if line is None:
                line = lines[value] = _Tally()
            line.add(status, runs, tokens)
    total = tally.line(None)
    dimensions = {
        name: {value: t.line(value) for value, t in lines.items()}
        for name, lines in tallies.items()
    }

    failures = [
        FailedRun(
            run_id=row.run_id,
            session_key=row.session_key,
            session_id=row.session_id,
            status=row.status,
            error=row.error,
            error_kind=row.error_kind,
            model=row.model,
            provider=row.provider,
            ended_at=row.ended_at,
            recorded_at=row.updated_at,
        )
        for row in connection.execute(
            select(r)
            .where(in_window, r.c.status.in_(("failed", "timeout")))
            .order_by(r.c.updated_at.desc(), r.c.run_id)
            .limit(LIST_LIMIT)
        )
    ]

    late_window = and_(
        rc.c.outcome == "archived", rc.c.recorded_at > since, rc.c.recorded_at <= now
    )
    late_count = connection.execute(
        select(func.count()).select_from(rc).where(late_window)
    ).scalar_one()
    late = [
        LateEvent(
            event_id=row.event_id,
            session_key=row.session_key,
            session_id=row.session_id,
            current_session_id=row.current_session_id,
            position=row.position,
            recorded_at=row.recorded_at,
        )
        for row in connection.execute(
            select(rc).where(late_window).order_by(rc.c.position.desc()).limit(LIST_LIMIT)
        )
    ]

    not_resumable = {
        state: count
        for state, count in connection.execute(
            select(g.c.state, func.count()).where(g.c.resumable.is_(False)).group_by(g.c.state)
        )
    }
    idle_rows = [
        NotResumable(
            session_key=row.session_key,
            session_id=row.session_id,
            status=row.status,
            entry_count=row.entry_count,
            updated_at=row.updated_at,
        )
        for row in connection.execute(
            select(g)
            .where(g.c.resumable.is_(False), g.c.state == "current", g.c.status != "new")
            .order_by(g.c.updated_at.desc(), g.c.session_id)
            .limit(LIST_LIMIT)
        )
    ]

    return StatusReport(
        generated_at=now,
        window_minutes=int(window.total_seconds() // 60),
        window_start=since,
        stuck_after_minutes=int(stuck_after.total_seconds() // 60),
        sessions=sum(by_status.values()),
        by_status=by_status,
        active_runs=active,
        stuck_runs=[run for run in active if run.stuck],
        window_runs=total,
        by_model=_ordered(dimensions["model"].values()),
        by_provider=_ordered(dimensions["provider"].values()),
        by_agent=_ordered(dimensions["agent"].values()),
        by_channel=_ordered(dimensions["channel"].values()),
        recent_failures=failures,
        late_events=late_count,
        recent_late_events=late,
        not_resumable=not_resumable,
        not_resumable_sessions=idle_rows,
        sessions_by_agent=_buckets(connection, s.c.agent),
        sessions_by_channel=_buckets(connection, s.c.channel),
    )


def _ordered(lines: Iterable[UsageLine]) -> list[UsageLine]:
    """Busiest first; ties by name (unknown last)."""
    return sorted(lines, key=lambda line: (-line.runs, line.name is None, line.name or ""))


def _buckets(connection: Connection, column: Any) -> list[Bucket]:
    rows = connection.execute(select(column, func.count()).group_by(column)).all()
    return sorted(
        (Bucket(name, count) for name, count in rows),
        key=lambda b: (-b.sessions, b.name is None, b.name or ""),
    )
