"""The operators' status report against a brute-force count over the log.

Hypothesis drives gateway workloads through the Python API — runs that start, end and
error (some late, on archived generations), resets, deletes, transcript appends, late
appends — with a controlled store clock (recordedAt) so windows cut through the data.
The report (SQL aggregates over the read models) must equal a direct count over the
recorded events, computed here without the fold: every number, list and bucket.
"""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st

from sessionledger.domain.errors import LedgerError
from sessionledger.domain.events import (
    GenerationOpened,
    RunEnded,
    RunErrored,
    RunStarted,
    SessionDeleted,
    SessionRotated,
    TranscriptAppended,
)
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.projections.reports import LIST_LIMIT, StatusReport

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
# key -> (agent, channel), written out rather than parsed, so the oracle does not share
# the code's parser
KEYS: dict[str, tuple[str | None, str | None]] = {
    "agent:main:telegram:direct:1": ("main", "telegram"),
    "agent:main:slack:channel:c1": ("main", "slack"),
    "agent:ops:slack:channel:c2": ("ops", "slack"),
    "cron:nightly-digest": (None, "cron"),
    "plain-key": (None, None),
}
MODELS = (("opus", "anthropic"), ("gpt", "openai"), (None, None))
OUTCOMES = ("done", "killed", "timeout", "interrupted")


class StoreClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


# -- workloads --------------------------------------------------------------------------

key_ix = st.sampled_from(sorted(KEYS))
usage = st.tuples(*[st.integers(0, 500)] * 4)
start_op = st.tuples(
    st.just("start"),
    key_ix,
    st.integers(0, len(MODELS) - 1),
    st.sampled_from(["user", "heartbeat", "cron"]),
    st.integers(0, 40),  # minutes the run started before it was recorded
)
end_op = st.tuples(st.just("end"), st.integers(0, 30), st.sampled_from(OUTCOMES), usage)
error_op = st.tuples(st.just("error"), st.integers(0, 30), usage)
reset_op = st.tuples(st.just("reset"), key_ix)
operations = st.one_of(
    start_op,
    end_op,
    start_op,
    end_op,
    error_op,
    reset_op,
    st.tuples(st.just("late-append"), key_ix),
    st.tuples(st.just("append"), key_ix, st.sampled_from(["user", "assistant", "system"])),
    st.tuples(st.just("tick"), st.integers(1, 25)),
    st.tuples(st.just("delete"), key_ix),
    st.tuples(st.just("open"), key_ix),
)
workloads = st.lists(operations, min_size=10, max_size=40)


@dataclass
class Driver:
    ledger: Ledger
    clock: StoreClock
    runs: list[tuple[str, str, str]] = field(default_factory=list)  # (run, key, sid)
    archived: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    archived_results: list[int] = field(default_factory=list)  # positions answered archived
    n: int = 0

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}-{uuid.uuid4().hex[:6]}"

    def current(self, key: str) -> str | None:
        try:
            return self.ledger.session(key).session_id
        except LedgerError:
            return None

    def send(self, key: str, sid: str, kind: str, occurred: datetime, **fields: Any) -> None:
        fact = {
            "type": kind,
            "eventId": self.fresh("e"),
            "sessionKey": key,
            "sessionId": sid,
            "occurredAt": occurred.isoformat(),
            "writer": fields.pop("writer", "runner"),
            **fields,
        }
        (result,) = self.ledger.record([fact])
        if result.outcome == "archived":
            assert result.position is not None
            self.archived_results.append(result.position)

    def run(self, op: tuple[Any, ...]) -> None:
        now = self.clock.now
        kind = op[0]
        if kind == "tick":
            self.clock.now += timedelta(minutes=op[1])
        elif kind == "open":
            self.ledger.resolve(op[1], at=now)
        elif kind in {"start", "append", "reset", "delete"}:
            key = op[1]
            sid = self.current(key)
            if sid is None:
                return
            if kind == "start":
                model, provider = MODELS[op[2]]
                run = self.fresh("r")
                self.send(
                    key,
                    sid,
                    "run.started",
                    now - timedelta(minutes=op[4]),
                    runId=run,
                    trigger=op[3],
                    model=model,
                    provider=provider,
                )
                self.runs.append((run, key, sid))
            elif kind == "append":
                entry = {
                    "id": self.fresh("m"),
                    "role": op[2],
                    "content": "x",
                    "timestamp": now.isoformat(),
                }
                self.send(key, sid, "transcript.appended", now, entry=entry, writer="ingress")
            elif kind == "reset":
                self.archived[key].append(sid)
                self.ledger.reset(key, at=now)
            else:
                self.archived[key].append(sid)
                self.ledger.delete(key, at=now)
        elif kind == "late-append":
            old = self.archived.get(op[1])
            if old:
                entry = {
                    "id": self.fresh("m"),
                    "role": "assistant",
                    "content": "late",
                    "timestamp": now.isoformat(),
                }
                self.send(
                    op[1], old[-1], "transcript.appended", now, entry=entry, writer="heartbeat"
                )
        elif kind in {"end", "error"}:
            if not self.runs:
                return
            run, key, sid = self.runs.pop(op[1] % len(self.runs))
            usage = dict(zip(("input", "output", "cacheRead", "cacheWrite"), op[-1], strict=True))
            if kind == "end":
                self.send(key, sid, "run.ended", now, runId=run, outcome=op[2], usage=usage)
            else:
                self.send(key, sid, "run.errored", now, runId=run, error="boom", usage=usage)


# -- the brute force ----------------------------------------------------------------------


def expected_report(
    ledger: Ledger, now: datetime, window: timedelta, stuck_after: timedelta
) -> dict[str, Any]:
    """Every figure of the report, counted straight from the recorded events."""
    since = now - window
    current: dict[str, str | None] = {}
    gens: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    late: list[tuple[int, str, str, datetime]] = []
    for position, event in ledger.log(limit=1_000_000):
        key, sid, recorded = event.session_key, event.session_id, event.timestamp
        if isinstance(event, GenerationOpened):
            current[key] = sid
            gens[sid] = {"key": key, "state": "current", "resumable": False, "runs": []}
        elif event.session_id != current.get(key):
            late.append((position, event.event_id, sid, recorded))
        gen = gens[sid]
        gen["updated_at"] = recorded
        if isinstance(event, SessionRotated):
            gen["state"] = "archived"
        elif isinstance(event, SessionDeleted):
            gen["state"] = "deleted"
            current[key] = None
        elif isinstance(event, TranscriptAppended):
            gen["resumable"] = gen["resumable"] or event.entry.role == "assistant"
            gen["entries"] = event.seq
        elif isinstance(event, RunStarted):
            runs[event.run_id] = {
                "key": key,
                "sid": sid,
                "model": event.model,
                "provider": event.provider,
                "started_at": event.occurred_at,
                "status": "running",
                "end": None,
                "tokens": (0, 0, 0, 0),
                "error": None,
            }
            gen["runs"].append(event.run_id)
        elif isinstance(event, (RunEnded, RunErrored)):
            run = runs[event.run_id]
            run["status"] = event.outcome if isinstance(event, RunEnded) else "failed"
            run["end"] = (position, recorded)
            u = event.usage
            run["tokens"] = (u.input, u.output, u.cache_read, u.cache_write)

    def gen_status(sid: str) -> str:
        started = gens[sid]["runs"]
        active = [r for r in started if runs[r]["status"] == "running"]
        if active:
            return "running"
        ended = [r for r in started if runs[r]["end"] is not None]
        if not ended:
            return "new"
        return str(runs[max(ended, key=lambda r: runs[r]["end"][0])]["status"])

    live = {key: sid for key, sid in current.items() if sid is not None}
    usage: dict[str, dict[Any, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    total: Counter[str] = Counter()
    failures = []
    for run_id, run in runs.items():
        if run["end"] is None or not since < run["end"][1] <= now:
            continue
        agent, channel = KEYS[run["key"]]
        line: Counter[str] = Counter({"runs": 1, run["status"]: 1})
        for name, n in zip(
            ("input", "output", "cacheRead", "cacheWrite"), run["tokens"], strict=True
        ):
            line[name] += n
        total.update(line)
        for dim, value in (
            ("model", run["model"]),
            ("provider", run["provider"]),
            ("agent", agent),
            ("channel", channel),
        ):
            usage[dim][value].update(line)
        if run["status"] in {"failed", "timeout"}:
            failures.append((run["end"][1], run_id))
    in_window_late = [x for x in late if since < x[3] <= now]
    return {
        "by_status": dict(Counter(gen_status(sid) for sid in live.values())),
        "active": sorted(
            (
                r,
                run["key"],
                run["sid"],
                run["sid"] == current.get(run["key"]),
                now - run["started_at"] > stuck_after,
            )
            for r, run in runs.items()
            if run["status"] == "running"
        ),
        "total": total,
        "usage": {dim: {k: +v for k, v in lines.items()} for dim, lines in usage.items()},
        "failures": sorted(failures, key=lambda f: (-f[0].timestamp(), f[1])),
        "late_count": len(in_window_late),
        "late": sorted(in_window_late, reverse=True)[:LIST_LIMIT],
        "late_positions": [p for p, *_ in late],
        "not_resumable": dict(Counter(g["state"] for g in gens.values() if not g["resumable"])),
        "not_resumable_sessions": sorted(
            (sid, g.get("entries", 0))
            for sid, g in gens.items()
            if not g["resumable"] and g["state"] == "current" and g["runs"]
        ),
        "agents": dict(Counter(KEYS[k][0] for k in live)),
        "channels": dict(Counter(KEYS[k][1] for k in live)),
    }


def line_counts(line: Any) -> Counter[str]:
    counts = Counter(
        {
            "runs": line.runs,
            "done": line.done,
            "failed": line.failed,
            "timeout": line.timeout,
            "killed": line.killed,
            "interrupted": line.interrupted,
            "input": line.input_tokens,
            "output": line.output_tokens,
            "cacheRead": line.cache_read_tokens,
            "cacheWrite": line.cache_write_tokens,
        }
    )
    return +counts


def check(report: StatusReport, want: dict[str, Any], now: datetime) -> None:
    assert report.by_status == want["by_status"]
    assert report.sessions == sum(want["by_status"].values())
    got_active = sorted(
        (a.run_id, a.session_key, a.session_id, a.current, a.stuck) for a in report.active_runs
    )
    assert got_active == want["active"]
    for a in report.active_runs:
        assert a.age_ms == (now - a.started_at) // timedelta(milliseconds=1)
    assert [a.run_id for a in report.stuck_runs] == [
        a.run_id for a in report.active_runs if a.stuck
    ]
    assert line_counts(report.window_runs) == +want["total"]
    for dim, lines in (
        ("model", report.by_model),
        ("provider", report.by_provider),
        ("agent", report.by_agent),
        ("channel", report.by_channel),
    ):
        assert {line.name: line_counts(line) for line in lines} == want["usage"].get(dim, {}), dim
        assert [line.runs for line in lines] == sorted((line.runs for line in lines), reverse=True)
    assert [f.run_id for f in report.recent_failures] == [r for _, r in want["failures"]][
        :LIST_LIMIT
    ]
    assert report.late_events == want["late_count"]
    assert [
        (e.position, e.event_id, e.session_id, e.recorded_at) for e in report.recent_late_events
    ] == want["late"]
    assert report.not_resumable == want["not_resumable"]
    if len(want["not_resumable_sessions"]) <= LIST_LIMIT:
        assert (
            sorted((g.session_id, g.entry_count) for g in report.not_resumable_sessions)
            == want["not_resumable_sessions"]
        )
    assert {b.name: b.sessions for b in report.sessions_by_agent} == want["agents"]
    assert {b.name: b.sessions for b in report.sessions_by_channel} == want["channels"]


def run_workload(
    url: str, workload: list[tuple[Any, ...]], report_after: int, window: int, stuck: int
) -> StatusReport:
    clock = StoreClock()
    with mock.patch("sessionledger.domain.conversation.utcnow", clock), Ledger.open(url) as ledger:
        driver = Driver(ledger, clock)
        for key in KEYS:
            ledger.resolve(key, at=clock.now)
        for op in workload:
            driver.run(op)
        now = clock.now + timedelta(minutes=report_after)
        ledger.clock = lambda: now
        report = ledger.status_report(stuck_after_minutes=stuck, window_minutes=window)
        want = expected_report(ledger, now, timedelta(minutes=window), timedelta(minutes=stuck))
        # The fence as the aggregate answered it equals the fence counted from the log.
        assert sorted(driver.archived_results) == want["late_positions"]
        check(report, want, now)
        return report


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sessionledger-reports-") as path:
        yield Path(path)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    workload=workloads,
    report_after=st.integers(0, 30),
    window=st.integers(1, 120),
    stuck=st.integers(1, 30),
)
def test_status_report_equals_a_count_over_the_log_on_sqlite(
    workdir: Path, workload: list[tuple[Any, ...]], report_after: int, window: int, stuck: int
) -> None:
    report = run_workload(
        f"sqlite:///{workdir / uuid.uuid4().hex}.db", workload, report_after, window, stuck
    )
    statistic("late events in the window", str(min(report.late_events, 3)))
    statistic("runs ended in the window", str(min(report.window_runs.runs, 3)))
    statistic("stuck runs", str(min(len(report.stuck_runs), 2)))


INCIDENT: list[tuple[Any, ...]] = [
    ("open", "agent:main:telegram:direct:1"),
    ("open", "agent:ops:slack:channel:c2"),
    ("open", "cron:nightly-digest"),
    ("start", "agent:main:telegram:direct:1", 0, "user", 3),
    ("start", "agent:ops:slack:channel:c2", 1, "user", 30),
    ("start", "cron:nightly-digest", 2, "cron", 0),
    ("append", "agent:main:telegram:direct:1", "assistant"),
    ("tick", 20),
    ("end", 0, "done", (100, 20, 5, 1)),
    ("reset", "agent:ops:slack:channel:c2"),
    ("tick", 10),
    ("error", 0, (3, 0, 0, 0)),  # the slack run errors late, on the archived generation
    ("late-append", "agent:ops:slack:channel:c2"),
    ("start", "agent:main:telegram:direct:1", 0, "user", 0),
    ("tick", 25),
    ("end", 1, "timeout", (7, 7, 0, 0)),
    ("delete", "cron:nightly-digest"),
]


@pytest.mark.postgres
def test_status_report_equals_a_count_over_the_log_on_postgres(postgres_url: str) -> None:
    run_workload(postgres_url, INCIDENT, report_after=5, window=40, stuck=15)
