"""Status report for operators, answered from indexed read models (never a log replay).

Every number is one SQL aggregate (or a short, bounded list) over indexed read-model
tables. Runs carry the agent and channel parsed from their key, so runs that
ended in the window are grouped in SQL by (status, agent, channel, model, provider) —
a handful of rows — and only those are rolled up per dimension here.

Clocks (documented in README "Status report"):
- the window is `(now - window, now]` on the **store's clock** (recordedAt): a run
  counts when its terminal event was recorded in the window (a finished run's
  `updated_at`; a run ends once), a fenced late event when its receipt was recorded
  in it. Reporter clocks may be skewed; the store's is one clock for every writer.
- ages of active runs (and "stuck") are `now - startedAt`, the run's own start
  (reporter clock), the same `startedAt` the session row shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, bindparam, func, select
from sqlalchemy.sql import ColumnElement

from sessionledger.projections.raw import RawSelect
from sessionledger.projections.rows import CAMEL
from sessionledger.projections.tables import ARCHIVED, RUNNING, ReadModelTables

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

    # An active run keeps its generation's status "running" (the fold's status is the
    # newest active run's), so the runs of archived or deleted generations are found
    # among a few index entries instead of joining every active run to its generation.
    not_current = set(
        connection.execute(
            select(g.c.session_id).where(g.c.status == "running", g.c.state != "current")
        ).scalars()
    )
    millisecond = timedelta(milliseconds=1)

    def active_run(
        run_id: str,
        key: str,
        session_id: str,
        trigger: str,
        writer: str,
        model: str | None,
        provider: str | None,
        started_at: datetime,
    ) -> ActiveRun:
        age = now - started_at
        # positional, in ActiveRun's field order: half the cost of keywords, and
        # thousands of runs can be active
        return ActiveRun(
            run_id,
            key,
            session_id,
            trigger,
            writer,
            model,
            provider,
            started_at,
            age // millisecond,
            session_id not in not_current,  # current
            age > stuck_after,  # stuck
        )

    # On the driver's cursor (projections/raw.py): SQLAlchemy's result processing of
    # 5,000 active runs was 2.5% of the report's instructions.
    active = running_runs(r).rows(connection, active_run)

    in_window = and_(r.c.status != "running", r.c.updated_at > since, r.c.updated_at <= now)
    tally = _Tally()
    tallies: dict[str, dict[str | None, _Tally]] = {
        "model": {},
        "provider": {},
        "agent": {},
        "channel": {},
    }
    for status, agent, channel, model, provider, runs, *sums in _usage(
        connection, r, in_window, since, now
    ):
        tokens = (int(sums[0]), int(sums[1]), int(sums[2]), int(sums[3]))
        tally.add(status, runs, tokens)
        for name, value in (
            ("model", model),
            ("provider", provider),
            ("agent", agent),
            ("channel", channel),
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
        for row in _newest_failures(connection, r, in_window)
    ]

    # The outcome as a literal, so the planner sees the partial index's own condition.
    late_window = and_(ARCHIVED, rc.c.recorded_at > since, rc.c.recorded_at <= now)
    late_count = connection.execute(
        select(func.count()).select_from(rc).where(late_window)
    ).scalar_one()
    late = [
        LateEvent(
            event_id=row.event_id,
            session_key=row.session_key,  # the generation's: receipts do not repeat it
            session_id=row.session_id,
            current_session_id=row.current_session_id,
            position=row.position,
            recorded_at=row.recorded_at,
        )
        for row in connection.execute(
            select(rc, g.c.session_key)
            .join(g, g.c.session_id == rc.c.session_id)
            .where(late_window)
            .order_by(rc.c.position.desc())
            .limit(LIST_LIMIT)
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

    by_agent, by_channel = _buckets(connection, s)
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
        sessions_by_agent=by_agent,
        sessions_by_channel=by_channel,
    )


@cache
def running_runs(r: Table) -> RawSelect:
    """The running runs, oldest first, in ActiveRun's first fields: on SQLite a read of
    `ix_ledger_runs_running_covering` alone."""
    columns = ("run_id", "session_key", "session_id", "trigger", "writer", "model", "provider")
    return RawSelect(
        select(*(r.c[name] for name in columns), r.c.started_at)
        .where(RUNNING)
        .order_by(r.c.started_at, r.c.run_id)
    )


_GROUPS = ("status", "agent", "channel", "model", "provider")
_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _usage(
    connection: Connection,
    r: Table,
    in_window: ColumnElement[bool],
    since: datetime,
    now: datetime,
) -> list[tuple[Any, ...]]:
    """Runs that ended in the window: (status, agent, channel, model, provider, runs,
    four token sums) per combination present.

    PostgreSQL hash-aggregates the window in one GROUP BY. SQLite aggregates by sorting,
    about 2 µs a row (half a second for 200,000 runs in the window), so there each
    combination's figures come from its own range of `ix_ledger_runs_group_usage`
    (ordered by the combination, then `updated_at`; it holds the token counts), and the
    combinations from `_combinations`.
    """
    groups = [r.c[name] for name in _GROUPS]
    figures = [func.count(), *(func.coalesce(func.sum(r.c[name]), 0) for name in _TOKENS)]
    if connection.dialect.name != "sqlite":
        query = select(*groups, *figures).where(in_window).group_by(*groups)
        return [tuple(row) for row in connection.execute(query)]
    one = select(*figures).where(
        r.c.status == bindparam("status"),
        # IS: a combination's agent, channel, model or provider may be NULL
        *(r.c[name].is_not_distinct_from(bindparam(name)) for name in _GROUPS[1:]),
        r.c.updated_at > since,
        r.c.updated_at <= now,
    )
    usage = []
    for combination in _combinations(connection, r, in_window):
        params = dict(zip(_GROUPS, combination, strict=True))
        runs, *sums = connection.execute(one, params).one()
        if runs:  # a combination found by the walk may have no run in the window
            usage.append((*combination, runs, *sums))
    return usage


WALK_BUDGET = 200  # index seeks; beyond them a DISTINCT over the window is used instead


class _OverBudget(Exception):
    pass


def _combinations(
    connection: Connection, r: Table, in_window: ColumnElement[bool]
) -> list[tuple[Any, ...]]:
    """SQLite: the (status, agent, channel, model, provider) combinations that runs
    which ended in the window may have.

    Few combinations ever occur, however many runs share them, so skipping along
    `ix_ledger_runs_group_usage` from one distinct value to the next (one index seek
    each) finds them all in a few dozen seeks, where a DISTINCT over the window reads
    every run in it. If the walk needs more than WALK_BUDGET seeks (combinations by the
    hundred), the DISTINCT over the window — a covering scan of
    `ix_ledger_runs_window_groups`, deduplicated as it goes — is the cheaper one.
    """
    columns = [r.c[name] for name in _GROUPS]
    budget = WALK_BUDGET
    found: list[tuple[Any, ...]] = []

    def walk(prefix: tuple[Any, ...]) -> None:
        nonlocal budget
        column = columns[len(prefix)]
        same = [c.is_not_distinct_from(v) for c, v in zip(columns, prefix, strict=False)]
        values: list[Any] = []
        if connection.execute(select(column).where(*same, column.is_(None)).limit(1)).first():
            values.append(None)
        after = column.is_not(None)
        while (budget := budget - 1) >= 0:
            value = connection.execute(select(func.min(column)).where(*same, after)).scalar()
            if value is None:
                break
            values.append(value)
            after = column > value
        else:
            raise _OverBudget
        for value in values:
            if len(prefix) + 1 == len(columns):
                found.append((*prefix, value))
            elif prefix or value != "running":
                walk((*prefix, value))

    try:
        walk(())
    except _OverBudget:
        query = select(*columns).where(in_window).distinct()
        return [tuple(row) for row in connection.execute(query)]
    return found


def _newest_failures(
    connection: Connection, r: Table, in_window: ColumnElement[bool]
) -> list[Row[Any]]:
    """Failed and timed-out runs of the window, newest first, at most LIST_LIMIT."""
    newest = (r.c.updated_at.desc(), r.c.run_id)
    if connection.dialect.name != "sqlite":
        failed = r.c.status.in_(("failed", "timeout"))
        query = select(r).where(in_window, failed).order_by(*newest).limit(LIST_LIMIT)
        return list(connection.execute(query).all())
    # SQLite would sort every failure of the window for the IN; LIST_LIMIT of each status
    # read backwards from `ix_ledger_runs_status_updated_at` and merged here is the same
    # list (SQLite orders text by code point, as Python does).
    rows: list[Row[Any]] = []
    for status in ("failed", "timeout"):
        query = select(r).where(in_window, r.c.status == status).order_by(*newest)
        rows += connection.execute(query.limit(LIST_LIMIT)).all()
    rows.sort(key=lambda row: row.run_id)
    rows.sort(key=lambda row: row.updated_at, reverse=True)
    return rows[:LIST_LIMIT]


def _ordered(lines: Iterable[UsageLine]) -> list[UsageLine]:
    """Busiest first; ties by name (unknown last)."""
    return sorted(lines, key=lambda line: (-line.runs, line.name is None, line.name or ""))


def _buckets(connection: Connection, s: Table) -> tuple[list[Bucket], list[Bucket]]:
    """Live keys per agent and per channel: one covering scan of
    `ix_ledger_sessions_agent_channel`, in its order (no sort)."""
    agents: Counter[str | None] = Counter()
    channels: Counter[str | None] = Counter()
    query = select(s.c.agent, s.c.channel, func.count()).group_by(s.c.agent, s.c.channel)
    for agent, channel, count in connection.execute(query):
        agents[agent] += count
        channels[channel] += count
    return _bucketed(agents), _bucketed(channels)


def _bucketed(counts: Counter[str | None]) -> list[Bucket]:
    return sorted(
        (Bucket(name, count) for name, count in counts.items()),
        key=lambda b: (-b.sessions, b.name is None, b.name or ""),
    )
