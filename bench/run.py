"""`python -m bench [--quick | --smoke] [--postgres URL] [--only NAME ...]`

Every scenario runs several times; the table shows the median and its ratio to a raw
sqlite3 (or psycopg) baseline measured in the same run, on the same disk. Targets are
printed with a pass/fail mark; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import httpload, peers
from bench.baseline import PostgresBaseline, SqliteBaseline, sqlite_select
from bench.facts import Chain, event_id, random_event_id
from bench.fixtures import REPO, SessionsStore, long_key, sessions_store
from sessionledger.infrastructure.ledger import Ledger


@dataclass(frozen=True)
class Profile:
    name: str
    repeats: int
    appends: int  # single-event commands per run
    ingest_calls: int  # calls of 1000 events per run (10x as many of 100)
    sessions: int  # keys in the sessions store (ten events each: the rebuild's log)
    transcript: int
    audit: int
    history_commands: int
    reads: int  # calls per latency run
    http_single: int  # requests per client per run
    http_batches: int  # batches of 100 per client per run
    http_seconds: float  # time limit per HTTP run
    rebuild_runs: int


PROFILES = {
    "full": Profile("full", 5, 1000, 5, 100_000, 1000, 10_000, 200, 200, 250, 10, 60, 3),
    "quick": Profile("quick", 3, 300, 3, 10_000, 1000, 10_000, 100, 100, 60, 3, 20, 1),
    "smoke": Profile("smoke", 1, 10, 1, 100, 50, 200, 5, 5, 3, 1, 10, 1),
}
CLIENTS = 16


@dataclass
class Result:
    name: str
    value: float
    unit: str  # "events/s", "req/s" (higher is better) or "ms" (lower is better)
    baseline: float | None = None  # same unit, the raw driver doing the same work
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def rate(self) -> bool:
        return self.unit != "ms"

    def ratio(self) -> str:
        if not self.baseline:
            return ""
        if self.rate:
            return f"{self.value / self.baseline:.2f}x raw rate"
        return f"{self.value / self.baseline:.1f}x raw time"

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "target": self.target,
            "ok": self.ok,
            "note": self.note,
        }


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:,.1f} ms"
    return f"{value:,.0f} {unit}"


def latency_ms(call: Callable[[], object], calls: int) -> float:
    """Median of `calls` timed calls, in ms."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return median(times) * 1000


class Bench:
    def __init__(self, profile: Profile, workdir: Path, fresh: bool) -> None:
        self.p = profile
        self.dir = workdir
        self.fresh = fresh
        self.results: list[Result] = []
        self.raw = SqliteBaseline(workdir)
        self._store: SessionsStore | None = None

    def add(self, result: Result) -> None:
        self.results.append(result)
        mark = {True: "PASS", False: "FAIL", None: ""}[result.ok]
        base = f" (raw {fmt(result.baseline, result.unit)})" if result.baseline else ""
        print(f"  {result.name}: {fmt(result.value, result.unit)}{base} {mark} {result.note}")
        sys.stdout.flush()

    def ledger(self, name: str) -> Ledger:
        return Ledger.open(f"sqlite:///{self.dir / name}")

    @property
    def store(self) -> SessionsStore:
        if self._store is None:
            print(f"sessions store: {self.p.sessions:,} keys")
            self._store = sessions_store(self.p.sessions, fresh=self.fresh)
        return self._store

    # -- writes ----------------------------------------------------------------------------

    def append_single(self) -> None:
        with self.ledger("append.db") as ledger:
            chains = _chains(ledger, "append", CLIENTS)
            for chain in chains:  # warm: aggregates cached, statements compiled
                ledger.record([chain.append()])
            ours, raw = [], []
            for _ in range(self.p.repeats):
                facts = [chains[i % len(chains)].append() for i in range(self.p.appends)]
                started = time.perf_counter()
                for fact in facts:
                    ledger.record([fact])
                ours.append(len(facts) / (time.perf_counter() - started))
                raw.append(self.raw.append_rate(self.p.appends))
        value, base = median(ours), median(raw)
        self.add(
            Result(
                "append 1 event/call (Python API)",
                value,
                "events/s",
                base,
                ">= 0.5x raw insert+commit",
                value >= 0.5 * base,
            )
        )

    def ingest(self, batch: int, random_ids: bool = False) -> None:
        """`random_ids`: UUIDv4 eventIds, which land all over the receipts' index, rather
        than growing ones, which land at its end: the same ingest, fewer pages a commit."""
        keys = 10 if batch <= 100 else 50
        calls = self.p.ingest_calls * (1000 // batch)
        ids = random_event_id if random_ids else event_id
        with self.ledger(f"ingest-{batch}{'-uuid4' if random_ids else ''}.db") as ledger:
            chains = _chains(ledger, f"ingest{batch}", keys, ids)

            def facts() -> list[dict[str, Any]]:
                return [chains[i % keys].append() for i in range(batch)]

            ledger.record(facts())  # warm
            ours, raw = [], []
            for _ in range(self.p.repeats):
                batches = [facts() for _ in range(calls)]
                started = time.perf_counter()
                for events in batches:
                    ledger.record(events)
                ours.append(batch * calls / (time.perf_counter() - started))
                raw.append(self.raw.batch_rate(batch, calls))
        value = median(ours)
        target = batch == 1000 and not random_ids
        self.add(
            Result(
                f"ingest {batch} events/call, projected"
                + (", UUIDv4 eventIds" if random_ids else ""),
                value,
                "events/s",
                median(raw),
                ">= 20,000 events/s" if target else "",
                value >= 20_000 if target else None,
            )
        )

    def ingest_both(self) -> None:
        self.ingest(100)
        self.ingest(1000)
        self.ingest(1000, random_ids=True)

    def history_cost(self) -> None:
        """One more append on a key with 10 vs 10,000 earlier events (warm cache)."""
        with self.ledger("history.db") as ledger:
            at = _now()
            short = long_key(ledger, "agent:bench:history:short", 10, at)
            long = long_key(ledger, "agent:bench:history:long", self.p.audit, at)
            for chain in (short, long):
                ledger.record([chain.append()])
            costs: dict[str, list[float]] = {"short": [], "long": []}
            for _ in range(self.p.repeats):
                for name, chain in (("short", short), ("long", long)):
                    facts = [chain.append() for _ in range(self.p.history_commands)]
                    times = []
                    for fact in facts:
                        started = time.perf_counter()
                        ledger.record([fact])
                        times.append(time.perf_counter() - started)
                    costs[name].append(median(times) * 1000)
        short_ms, long_ms = median(costs["short"]), median(costs["long"])
        self.add(
            Result(
                f"command cost, {self.p.audit:,} earlier events",
                long_ms,
                "ms",
                None,
                "<= 1.5x the 10-event case",
                long_ms <= 1.5 * short_ms,
                f"(10 earlier: {short_ms:.3f} ms; {long_ms / short_ms:.2f}x)",
            )
        )

    # -- reads -----------------------------------------------------------------------------

    def transcript_and_audit(self) -> None:
        with self.ledger("reads.db") as ledger:
            at = _now()
            chat = long_key(ledger, "agent:bench:transcript", self.p.transcript + 1, at)
            audited = long_key(ledger, "agent:bench:audit", self.p.audit, at)
            raw = sqlite_select(self.dir / "reads.db")
            audit_view = ledger.session(audited.key)
            originator = _originator(self.dir / "reads.db", audit_view.position)
            ours_t, raw_t, ours_a, raw_a = [], [], [], []
            for _ in range(self.p.repeats):
                assert len(ledger.transcript(chat.key)) == self.p.transcript
                ours_t.append(latency_ms(lambda: ledger.transcript(chat.key), 10))
                raw_t.append(
                    1000
                    * median(
                        [
                            raw(
                                "SELECT * FROM ledger_entries WHERE session_id = ? ORDER BY seq",
                                (chat.session_id,),
                            )
                            for _ in range(10)
                        ]
                    )
                )
                ours_a.append(latency_ms(lambda: ledger.audit(audited.key), 1))
                raw_a.append(
                    1000
                    * raw(
                        "SELECT * FROM sessionledger_events WHERE originator_id = ? "
                        "ORDER BY originator_version",
                        (originator,),
                    )
                )
        value, base = median(ours_t), median(raw_t)
        self.add(
            Result(
                f"read a {self.p.transcript:,}-entry transcript",
                value,
                "ms",
                base,
                "<= 3x raw select",
                value <= 3 * base,
            )
        )
        value = median(ours_a)
        self.add(
            Result(
                f"audit of a {self.p.audit:,}-event key",
                value,
                "ms",
                median(raw_a),
                "< 1 s",
                value < 1000,
            )
        )

    def store_reads(self) -> None:
        store = self.store
        clock = store.finished_at + timedelta(minutes=1)
        rng = random.Random(7)
        raw = sqlite_select(store.path)
        row_sql = (
            "SELECT * FROM ledger_sessions s JOIN ledger_generations g "
            "ON g.session_id = s.session_id WHERE s.session_key = ?"
        )
        list_sql = (
            "SELECT * FROM ledger_sessions s JOIN ledger_generations g "
            "ON g.session_id = s.session_id ORDER BY s.session_key LIMIT 101"
        )
        status_sql = (
            "SELECT status, count(*) FROM ledger_generations WHERE state = 'current' "
            "GROUP BY status"
        )
        with Ledger.open(store.url, clock=lambda: clock) as ledger:
            keys = [store.key(rng.randrange(store.sessions)) for _ in range(self.p.reads)]
            row, row_raw, page, page_raw, report, report_raw = [], [], [], [], [], []
            for _ in range(self.p.repeats):
                row.append(_each_ms(ledger.session, keys))
                row_raw.append(1000 * median([raw(row_sql, (k,)) for k in keys]))
                page.append(latency_ms(lambda: ledger.sessions(limit=100), 20))
                page_raw.append(1000 * median([raw(list_sql, ()) for _ in range(20)]))
                report.append(latency_ms(ledger.status_report, 1))
                report_raw.append(1000 * raw(status_sql, ()))
        n = f"{store.sessions:,}"
        value = median(row)
        self.add(Result("read one row", value, "ms", median(row_raw), "< 1 ms", value < 1))
        self.add(Result(f"list 100 of {n} sessions", median(page), "ms", median(page_raw)))
        value = median(report)
        self.add(
            Result(
                f"status report over {n} sessions",
                value,
                "ms",
                median(report_raw),
                "< 200 ms",
                value < 200,
                "(raw: one GROUP BY status)",
            )
        )

    def rebuild(self) -> None:
        store = self.store
        raw = sqlite_select(store.path)
        rates, rss, raw_rates = [], [], []
        for _ in range(self.p.rebuild_runs):
            done = subprocess.run(
                [sys.executable, "-m", "bench.child", "rebuild", store.url],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"rebuild child failed:\n{done.stderr[-3000:]}")
            info = json.loads(done.stdout.strip().splitlines()[-1])
            rates.append(info["events"] / info["seconds"])
            rss.append(info["peakRssMb"])
            seconds = raw("SELECT * FROM sessionledger_events", ())
            raw_rates.append(store.events / seconds)
        value, peak = median(rates), max(rss)
        self.add(
            Result(
                f"rebuild {store.events:,} events",
                value,
                "events/s",
                median(raw_rates),
                ">= 30,000 events/s, peak RSS < 300 MB",
                value >= 30_000 and peak < 300,
                f"(peak RSS {peak:.0f} MB, its worker processes' included; "
                "raw: SELECT * of the log)",
            )
        )

    # -- HTTP ------------------------------------------------------------------------------

    def http(self) -> None:
        path = self.dir / "http.db"
        with Ledger.open(f"sqlite:///{path}") as ledger:
            chains = _chains(ledger, "http", CLIENTS)
        single, batched = [], []
        with httpload.server(f"sqlite:///{path}", self.dir / "server.log") as port:
            for run in range(self.p.repeats + 1):  # the first run warms the server up
                requests = [
                    [
                        httpload.post("/v1/events", {"events": [c.append()]})
                        for _ in range(self.p.http_single)
                    ]
                    for c in chains
                ]
                count, seconds = httpload.load(port, requests, self.p.http_seconds)
                if run:
                    single.append(count / seconds)
                requests = [
                    [
                        httpload.post("/v1/events", {"events": [c.append() for _ in range(100)]})
                        for _ in range(self.p.http_batches)
                    ]
                    for c in chains
                ]
                count, seconds = httpload.load(port, requests, self.p.http_seconds)
                if run:
                    batched.append(100 * count / seconds)
        raw_single = self.raw.append_rate(self.p.appends)
        raw_batch = self.raw.batch_rate(100, 50)
        value = median(single)
        self.add(
            Result(
                f"HTTP 1 event/request, {CLIENTS} clients",
                value,
                "req/s",
                raw_single,
                ">= 1,500 req/s",
                value >= 1500,
            )
        )
        self.add(
            Result(
                f"HTTP 100 events/request, {CLIENTS} clients",
                median(batched),
                "events/s",
                raw_batch,
            )
        )

    # -- PostgreSQL ------------------------------------------------------------------------

    def postgres(self, url: str) -> None:
        prefix = f"pg{uuid.uuid4().hex[:6]}"
        ledger = Ledger.open(url)  # first: it refuses a database holding foreign tables only
        base = PostgresBaseline(url)
        try:
            with ledger:
                chains = _chains(ledger, prefix, CLIENTS)
                for chain in chains:
                    ledger.record([chain.append()])
                ours, raw = [], []
                for _ in range(self.p.repeats):
                    facts = [chains[i % CLIENTS].append() for i in range(self.p.appends)]
                    started = time.perf_counter()
                    for fact in facts:
                        ledger.record([fact])
                    ours.append(len(facts) / (time.perf_counter() - started))
                    raw.append(base.append_rate(self.p.appends))
                self.add(Result("[pg] append 1 event/call", median(ours), "events/s", median(raw)))
                ours, raw = [], []
                for _ in range(self.p.repeats):
                    batches = [
                        [chains[i % CLIENTS].append() for i in range(1000)]
                        for _ in range(self.p.ingest_calls)
                    ]
                    started = time.perf_counter()
                    for events in batches:
                        ledger.record(events)
                    ours.append(1000 * len(batches) / (time.perf_counter() - started))
                    raw.append(base.batch_rate(1000, self.p.ingest_calls))
                self.add(
                    Result("[pg] ingest 1000 events/call", median(ours), "events/s", median(raw))
                )
                chat = chains[0]
                sql = "SELECT * FROM ledger_entries WHERE session_id = ? ORDER BY seq"
                ours_t = [latency_ms(lambda: ledger.transcript(chat.key), 10)]
                raw_t = [
                    1000 * median([base.select_seconds(sql, (chat.session_id,)) for _ in range(10)])
                ]
                self.add(
                    Result(
                        f"[pg] read a {chat.count:,}-entry transcript",
                        median(ours_t),
                        "ms",
                        median(raw_t),
                    )
                )
                row_sql = (
                    "SELECT * FROM ledger_sessions s JOIN ledger_generations g "
                    "ON g.session_id = s.session_id WHERE s.session_key = ?"
                )
                self.add(
                    Result(
                        "[pg] read one row",
                        latency_ms(lambda: ledger.session(chat.key), self.p.reads),
                        "ms",
                        1000
                        * median([base.select_seconds(row_sql, (chat.key,)) for _ in range(10)]),
                    )
                )
        finally:
            base.close()


def _each_ms(call: Callable[[str], object], args: list[str]) -> float:
    """Median of one timed call per argument, in ms."""
    times = []
    for arg in args:
        started = time.perf_counter()
        call(arg)
        times.append(time.perf_counter() - started)
    return median(times) * 1000


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _chains(ledger: Ledger, prefix: str, n: int, ids: Callable[[], str] = event_id) -> list[Chain]:
    at = _now()
    chains = []
    for i in range(n):
        key = f"agent:{prefix}:telegram:direct:{i}"
        chains.append(Chain(key, ledger.resolve(key, at=at).session.session_id, at, ids=ids))
    return chains


def _originator(path: Path, position: int) -> Any:
    import sqlite3

    with sqlite3.connect(str(path)) as connection:
        row = connection.execute(
            "SELECT originator_id FROM sessionledger_events WHERE id = ?", (position,)
        ).fetchone()
    return row[0]


def peers_scenario(bench: Bench, postgres: str | None = None) -> None:
    """Ours against the peers (bench/peers.py), in this profile's sizes; each row's note
    is its ratio to the best peer at the same task."""
    p = bench.p
    # At most 3 rounds: a round of the slowest peers takes minutes. At once: a tenth of
    # the sequential appends to each conversation (16 x 100 in the full profile).
    sizes = peers.Sizes(min(p.repeats, 3), p.appends, max(1, p.appends // 10), p.transcript)
    results = peers.measure(bench.dir, sizes, postgres)
    prefix = "[pg] " if postgres else ""
    for m in results:
        name = f"{prefix}peers: {m.task}, {m.store}"
        bench.results.append(Result(name, m.value, m.unit, note=peers.ratio(m, results)))
    if results:
        print(peers.table(results, sizes.repeats))


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "append": Bench.append_single,
    "ingest": Bench.ingest_both,
    "history": Bench.history_cost,
    "reads": Bench.transcript_and_audit,
    "rebuild": Bench.rebuild,  # first: the store's read models are then this code's
    "store": Bench.store_reads,
    "http": Bench.http,
    "peers": peers_scenario,
}
# Scenarios with a PostgreSQL variant of their own, run by `--postgres URL` when selected;
# the others' PostgreSQL variants are Bench.postgres.
POSTGRES_SCENARIOS: dict[str, Callable[[Bench, str], None]] = {"peers": peers_scenario}


def table(results: list[Result], profile: Profile) -> str:
    headers = ("scenario", "median", "raw baseline", "ratio", "target", "")
    rows = [
        (
            r.name,
            fmt(r.value, r.unit),
            fmt(r.baseline, r.unit) if r.baseline else "",
            r.ratio(),
            r.target,
            {True: "PASS", False: "FAIL", None: ""}[r.ok],
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = [
        " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
        "-+-".join("-" * w for w in widths),
    ]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    notes = [f"  {r.name}: {r.note}" for r in results if r.note]
    scaled = profile.name != "full"
    footer = [
        f"profile {profile.name}: median of {profile.repeats} runs"
        + (f" ({profile.rebuild_runs} of the rebuild)" if profile.rebuild_runs > 1 else "")
        + (" (scaled down: targets are for the full profile)" if scaled else "")
    ]
    return "\n".join([*lines, "", *notes, "", *footer])


@contextmanager
def _workdir(given: str | None) -> Iterator[Path]:
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="sessionledger-bench-") as directory:
        yield Path(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="scaled down: about 2 minutes")
    size.add_argument("--smoke", action="store_true", help="tiny: seconds (for the test suite)")
    parser.add_argument(
        "--postgres", metavar="URL", help="also run the selected scenarios' PostgreSQL variants"
    )
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run only these")
    parser.add_argument("--dir", help="work directory (default: a fresh temp dir)")
    parser.add_argument("--fresh", action="store_true", help="rebuild cached fixtures")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "smoke" if args.smoke else "full"]
    started = time.perf_counter()
    with _workdir(args.dir) as workdir:
        bench = Bench(profile, workdir, args.fresh)
        selected = args.only or list(SCENARIOS)
        try:
            for name in selected:
                print(f"[{name}]")
                SCENARIOS[name](bench)
            if args.postgres:
                if any(name not in POSTGRES_SCENARIOS for name in selected):
                    print("[postgres]")
                    bench.postgres(args.postgres)
                for name in selected:
                    if name in POSTGRES_SCENARIOS:
                        print(f"[postgres {name}]")
                        POSTGRES_SCENARIOS[name](bench, args.postgres)
        finally:
            bench.raw.close()
    print()
    print(table(bench.results, profile) if bench.results else "no results (all skipped)")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_json() for r in bench.results], indent=2))
    return 0
