"""Looking after a store that keeps serving: verify, online rebuild, recover, prune and
the bindings check. Every repair is an event in the log (so replay = live still holds);
the read models are only ever written by the fold.

Rebuild and verify fold the log into the `*_shadow` tables page by page, each page its
own short transaction (never one transaction over the whole log), so memory stays
bounded and writers keep going in between:

- rebuild then takes the writer lock once, folds the few events that arrived meanwhile
  into the shadow, and replaces the live tables' contents with the shadow's in that one
  transaction: readers see the old rows until it commits, then the new ones.
- verify compares live and shadow tables in one read snapshot, row by row in key order;
  events the shadow has not folded yet are folded into an in-memory overlay over it.

A large SQLite rebuild folds in worker processes instead, each its share of the keys,
into files of their own, merged into one pair that the swap copies straight into the
live tables (infrastructure/partition.py): no shadow tables to fill and clear.

One rebuild or verify at a time per store: a second one started alongside resets the
shadow (or removes the worker files) under the first, which then fails
(StoreUnavailable) rather than swap or compare rows it did not fold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import sqlalchemy.exc
from eventsourcing.persistence import StoredEvent
from sqlalchemy import Connection, Executable, Table, and_, or_, select, text

from sessionledger.domain.errors import InvalidEvent, LedgerError, StoreUnavailable
from sessionledger.domain.events import LedgerEvent, RunEndedFact
from sessionledger.domain.values import Writer, digest
from sessionledger.infrastructure import partition
from sessionledger.infrastructure.collector import collector_at_ease
from sessionledger.infrastructure.database import translate_faults
from sessionledger.projections.projector import Executor, Projector, SqlRowLoader
from sessionledger.projections.replay import Mismatch
from sessionledger.projections.rows import CAMEL, GenerationRow, RunRow, entry_viewer, row_values
from sessionledger.projections.state import RowSet
from sessionledger.projections.tables import PROJECTION_NAME, RUNNING, SHADOW, TABLES
from sessionledger.projections.verify import ChainChecker, compare_tables

if TYPE_CHECKING:
    from sessionledger.infrastructure.ledger import Ledger, UnitOfWork

T = TypeVar("T")
Progress = Callable[[int], None] | None

PAGE = partition.PAGE  # events per shadow transaction (read and decoded before it begins)
CATCH_UP_UNDER_LOCK = 1000  # events a rebuild may leave for its swap (folded under the lock)
MAX_OVERLAY = 5000  # events verify folds in memory on top of the shadow
MAX_LISTED = 1000  # mismatches a report lists (it counts them all)
SYSTEM: Writer = "system"


# -- reports ------------------------------------------------------------------------------


@dataclass(slots=True)
class VerifyReport:
    __pydantic_config__ = CAMEL

    ok: bool = True
    position: int = 0
    events: int = 0
    chains: int = 0
    entries: int = 0
    mismatch_count: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    def add(self, mismatch: Mismatch) -> None:
        self.ok = False
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_LISTED:
            self.mismatches.append(mismatch)


@dataclass(frozen=True, slots=True)
class RecoveredRun:
    __pydantic_config__ = CAMEL

    run_id: str
    session_key: str
    session_id: str
    started_at: datetime
    outcome: str  # applied | archived | duplicate | rejected
    reason: str | None


@dataclass(frozen=True, slots=True)
class RecoverReport:
    __pydantic_config__ = CAMEL

    stale_before: datetime
    runs: list[RecoveredRun]

    @property
    def closed(self) -> int:
        return sum(r.outcome != "rejected" for r in self.runs)


@dataclass(frozen=True, slots=True)
class PrunedGeneration:
    __pydantic_config__ = CAMEL

    session_key: str
    session_id: str
    pruned: bool
    entries: int
    export: str | None
    reason: str | None  # why it was skipped


@dataclass(frozen=True, slots=True)
class PruneReport:
    __pydantic_config__ = CAMEL

    untouched_since: datetime
    generations: list[PrunedGeneration]

    @property
    def pruned(self) -> int:
        return sum(g.pruned for g in self.generations)


@dataclass(frozen=True, slots=True)
class BindingCheck:
    __pydantic_config__ = CAMEL

    session_key: str
    session_id: str
    provider: str
    cli_session_id: str
    transcript: str
    alive: bool
    dropped: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BindingsReport:
    __pydantic_config__ = CAMEL

    directory: str
    bindings: list[BindingCheck]

    @property
    def dead(self) -> list[BindingCheck]:
        return [b for b in self.bindings if not b.alive]


# -- the shadow tables ----------------------------------------------------------------------


class Shadow:
    """The log folded into the `*_shadow` tables, one page per short transaction."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.projector = Projector(SHADOW)

    def side_write(self, work: Callable[[Executor], T]) -> T:
        """A short transaction on the shadow tables. PostgreSQL: without the writer lock
        (commits happen in log order under it, so reading the log needs none). SQLite has
        one writer at a time, so there it queues with the others, a page at a time."""
        database = self.ledger.database
        try:
            if database.dialect == "sqlite":
                return database.write(work)
            with translate_faults(), database.engine.begin() as connection:
                return work(connection)
        except (RuntimeError, sqlalchemy.exc.IntegrityError) as e:
            raise _busy() from e

    def clear(self) -> None:
        def work(executor: Executor) -> None:
            for table in (*reversed(SHADOW.projected), SHADOW.tracking):
                executor.execute(table.delete())

        self.side_write(work)

    def fold(self, on_progress: Progress = None) -> int:
        """Fold pages until the shadow reaches the log head as it was when the fold began
        (busy writers cannot keep it chasing the head); returns its position."""
        database = self.ledger.database
        with database.reading() as connection:
            target = self.ledger.projector.log_head(connection)
            position = self.projector.position(connection)

        def read(after: int) -> Sequence[tuple[int, LedgerEvent]]:
            # Read and decoded outside the page's transaction: committed events never
            # change and commit in log order, so this is the log's next page; the writer
            # lock is held only to fold and write it (decoding was a quarter of a page).
            with database.reading() as connection:
                return self.ledger.event_log.read(connection, after, PAGE)

        def write(events: Sequence[tuple[int, LedgerEvent]], after: int) -> None:
            self.side_write(self._page(events, after))

        return partition.fold_pages(read, write, position, PAGE, on_progress, until=target)

    def _page(
        self, events: Sequence[tuple[int, LedgerEvent]], after: int
    ) -> Callable[[Executor], None]:
        def page(executor: Executor) -> None:
            # Fails (tracking moved: _busy) if another rebuild or verify reset the shadow.
            self.projector.project(executor, self.projector.new_rowset(executor), events, after)

        return page

    def behind(self) -> int:
        """Events in the log the shadow has not folded yet."""
        with self.ledger.database.reading() as connection:
            head = self.ledger.projector.log_head(connection)
            return head - self.projector.position(connection)


def _busy() -> StoreUnavailable:
    return StoreUnavailable(
        "another rebuild or verify is using the shadow tables; retry when it is done"
    )


@contextmanager
def _snapshot(ledger: Ledger) -> Iterator[Connection]:
    """One consistent read of every table (PostgreSQL REPEATABLE READ; SQLite's read
    transaction is a snapshot already)."""
    database = ledger.database
    if database.dialect != "postgresql":
        with database.reading() as connection:
            yield connection
        return
    with (
        translate_faults(),
        database.engine.connect() as connection,
    ):
        connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


# -- rebuild ----------------------------------------------------------------------------------


def rebuild(
    ledger: Ledger,
    on_progress: Progress = None,
    *,
    workers: int | None = None,
    partition_from: int = partition.PARTITION_FROM,
) -> int:
    """Rebuild every read model from the log while the store keeps serving.

    A SQLite file whose log holds `partition_from` events or more is folded by `workers`
    processes (default: the cores available, at most partition.MAX_WORKERS), each its
    share of the keys (infrastructure/partition.py); smaller logs, PostgreSQL and
    in-memory stores fold in this process."""
    with collector_at_ease():
        return _rebuild(ledger, on_progress, workers, partition_from)


def _rebuild(
    ledger: Ledger, on_progress: Progress, workers: int | None, partition_from: int
) -> int:
    shadow = Shadow(ledger)
    shadow.clear()
    if workers is None:
        workers = partition.default_workers()
    large = workers > 1 and partition.store_path(ledger) is not None
    if large and _log_size(ledger) >= partition_from:
        counted = 0

        def progress(count: int) -> None:
            nonlocal counted
            counted += count
            if on_progress is not None:
                on_progress(count)

        position = _rebuild_partitioned(ledger, workers, progress)
        if position is not None:
            return position
        # Two keys' rows collided: fold serially, its events not reported twice.
        on_progress = _skipping(counted, on_progress)
    shadow.fold(on_progress)
    _catch_up_before_swap(shadow.behind, lambda: shadow.fold(on_progress))

    sqlite = ledger.database.dialect == "sqlite"

    def swap(session: Executor) -> int:
        # The events recorded since the last page, under the writer lock: none can follow.
        try:
            position = shadow.projector.catch_up(session, ledger._read_log(session), on_progress)
        except RuntimeError as e:
            raise _busy() from e
        _clear_live(session)
        for live, twin in zip(TABLES.projected, SHADOW.projected, strict=True):
            session.execute(_copy_rows(session, twin, live, sqlite=sqlite))
        _go_live(ledger, session, position)
        return position

    position = ledger.database.write(swap)
    shadow.clear()
    return position


def _clear_live(session: Executor) -> None:
    for table in reversed(TABLES.projected):
        session.execute(table.delete())


def _go_live(ledger: Ledger, session: Executor, position: int) -> None:
    """The live tables, just filled, stand at `position`; every process's cached rows
    are void."""
    ledger.projector.set_position(session, position)
    ledger.projector.new_epoch(session)


def _rebuild_partitioned(ledger: Ledger, workers: int, on_progress: Progress) -> int | None:
    """The log folded across worker processes, each into files of its own, the files
    merged into one pair and that copied straight into the live tables
    (infrastructure/partition.py); None (nothing swapped) if two keys' rows collided. A
    worker file gone (another rebuild of the store removed it) is StoreUnavailable."""
    with translate_faults(), partition.folded(ledger, workers, on_progress) as parts:
        if not parts.merge():
            return None
        _catch_up_before_swap(
            lambda: _log_size(ledger) - parts.position,
            lambda: parts.catch_up(_log_size(ledger), on_progress),
        )

        def swap(session: Connection) -> int:
            _clear_live(session)
            for copy in parts.copies():
                session.exec_driver_sql(copy)
            _go_live(ledger, session, parts.position)
            # The events recorded since the file's position, under the writer lock: none
            # can follow. Folded by a projector of its own: the live one's row cache
            # holds rows from before the swap.
            return Projector(TABLES).catch_up(session, ledger._read_log(session), on_progress)

        return ledger.database.write_attached(swap, parts.attachments)


def _catch_up_before_swap(behind: Callable[[], int], fold: Callable[[], object]) -> None:
    """Fold what arrived during a rebuild's fold while it is more than a few pages (at
    most three passes): the swap folds the rest, under the writer lock."""
    for _pass in range(3):
        if behind() <= CATCH_UP_UNDER_LOCK:
            return
        fold()


def _log_size(ledger: Ledger) -> int:
    """The log's head: its events, near enough (ids are not reused)."""
    with ledger.database.reading() as connection:
        return ledger.projector.log_head(connection)


def _skipping(already: int, on_progress: Progress) -> Progress:
    """`on_progress` for a second fold over events already reported: the first `already`
    are not reported again."""
    if on_progress is None:
        return None
    left = already

    def progress(count: int) -> None:
        nonlocal left
        skipped = min(left, count)
        left -= skipped
        if count > skipped:
            on_progress(count - skipped)

    return progress


def _copy_rows(session: Executor, source: Table, target: Table, *, sqlite: bool) -> Executable:
    """INSERT … SELECT of every row of `source` into the (emptied) `target`, a table of
    the same columns.

    On SQLite, `INSERT INTO target SELECT * FROM source` when both tables have the same
    columns in the same order (as their migrations made them): SQLite then copies the
    records as they are stored, b-tree by b-tree where the indexes match too (its
    transfer optimisation), about three times faster than column by column, and the
    swap holds the writer lock that much shorter. A column list in either place turns
    the optimisation off, so the orders are checked first: `*` with columns in
    different orders would put values in the wrong columns."""
    if sqlite and _columns(session, source) == _columns(session, target):
        return text(f'INSERT INTO "{target.name}" SELECT * FROM "{source.name}"')
    columns = [c.name for c in target.columns]
    return target.insert().from_select(columns, select(*(source.c[c] for c in columns)))


def _columns(session: Executor, table: Table) -> list[tuple[Any, ...]]:
    """A SQLite table's columns as stored: name, type, not null, default, primary key."""
    rows = session.execute(text(f'PRAGMA table_info("{table.name}")'))
    return [tuple(row[1:]) for row in rows]


# -- verify -----------------------------------------------------------------------------------


def verify(ledger: Ledger, on_progress: Progress = None) -> VerifyReport:
    """Hash chains from the log, then every read model against a fresh fold of the log."""
    with collector_at_ease():
        return _verify(ledger, on_progress)


def _verify(ledger: Ledger, on_progress: Progress) -> VerifyReport:
    report = VerifyReport()
    if not _check_chains(ledger, report, on_progress):
        report.add(
            Mismatch("events", "*", "payload", "events that do not decode", "a decodable log")
        )
        return report
    shadow = Shadow(ledger)
    shadow.clear()
    try:
        shadow.fold(on_progress)
        _compare(ledger, shadow, report)
    finally:
        shadow.clear()
    return report


def _check_chains(ledger: Ledger, report: VerifyReport, on_progress: Progress) -> bool:
    """Stream the log one aggregate (sessionKey) at a time; False if an event does not decode."""
    events = ledger.app.events_table
    mapper = ledger.event_log.mapper
    checker = ChainChecker()
    decodable = True
    current: Any = None
    pending = 0
    with ledger.database.reading() as connection:
        rows = connection.execution_options(stream_results=True, max_row_buffer=PAGE).execute(
            select(events).order_by(events.c.originator_id, events.c.originator_version)
        )
        for row in rows:
            if row.originator_id != current:
                checker.next_aggregate()
                current = row.originator_id
            try:
                event: LedgerEvent = mapper.to_domain_event(  # type: ignore[assignment]
                    StoredEvent(
                        originator_id=row.originator_id,
                        originator_version=row.originator_version,
                        topic=row.topic,
                        state=bytes(row.state),
                    )
                )
            except Exception as e:  # a changed payload may not even parse
                decodable = False
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                report.add(Mismatch("events", str(row.id), "payload", "does not decode", first))
                continue
            report.events += 1
            for mismatch in checker.check(event):
                report.add(mismatch)
            pending += 1
            if on_progress is not None and pending == PAGE:
                on_progress(pending)
                pending = 0
    checker.finish()
    if on_progress is not None and pending:
        on_progress(pending)
    report.chains, report.entries = checker.generations, checker.entries
    return decodable


def _compare(ledger: Ledger, shadow: Shadow, report: VerifyReport) -> None:
    for _attempt in range(20):
        with _snapshot(ledger) as connection:
            folded = shadow.projector.position(connection)
            live = ledger.projector.position(connection)
            if folded <= live <= folded + MAX_OVERLAY:
                _compare_in(ledger, connection, folded, live, report)
                return
        # Writers moved far ahead of the shadow (or the live projection lags it): fold on.
        if live < folded:
            ledger.catch_up()
        shadow.fold()
    raise StoreUnavailable("verify could not keep up with the writers; retry later")


def _compare_in(
    ledger: Ledger, connection: Connection, folded: int, live: int, report: VerifyReport
) -> None:
    """In one snapshot: the shadow (at `folded`) plus the events up to `live`, folded in
    memory, against the live tables (at `live`)."""
    report.position = live
    head = ledger.projector.log_head(connection)
    if live != head:
        report.add(Mismatch("tracking", PROJECTION_NAME, "position", live, head))
    overlay = RowSet(SqlRowLoader(connection, SHADOW))
    after = folded
    while after < live:
        page = [(p, e) for p, e in ledger.event_log.read(connection, after, PAGE) if p <= live]
        if not page:
            break
        overlay.prefetch_for(e for _, e in page)
        for position, event in page:
            overlay.apply(event, position)
        after = page[-1][0]
    for mismatch in compare_tables(connection, TABLES, SHADOW, overlay):
        report.add(mismatch)


# -- recover ----------------------------------------------------------------------------------


def recover(ledger: Ledger, stale_after: timedelta, *, at: datetime | None = None) -> RecoverReport:
    """Close runs still `running` after `stale_after` (their runner is gone) as
    `interrupted`, each with a stopReason, written by `system`."""
    now = at or ledger.clock()
    cutoff = now - stale_after
    found: list[RecoveredRun] = []
    r = TABLES.runs
    after: tuple[datetime, str] | None = None
    while True:
        # The status as a literal: the partial index of running runs serves the order.
        query = select(r).where(RUNNING, r.c.started_at < cutoff)
        if after is not None:
            started, run_id = after
            query = query.where(
                or_(r.c.started_at > started, and_(r.c.started_at == started, r.c.run_id > run_id))
            )
        with ledger.database.reading() as connection:
            runs = [
                RunRow(**row._mapping)
                for row in connection.execute(
                    query.order_by(r.c.started_at, r.c.run_id).limit(PAGE)
                )
            ]
        if not runs:
            break
        after = (runs[-1].started_at, runs[-1].run_id)
        facts = [
            RunEndedFact(
                event_id="recover-" + digest(run.run_id.encode())[:40],
                session_key=run.session_key,
                session_id=run.session_id,
                run_id=run.run_id,
                occurred_at=now,
                writer=SYSTEM,
                outcome="interrupted",
                stop_reason=(
                    f"stale: running since {run.started_at.isoformat()}, longer than "
                    f"{_span(stale_after)} with no end reported; closed by recover (runner gone)"
                ),
            )
            for run in runs
        ]
        results = ledger.record(facts)
        found.extend(
            RecoveredRun(
                run.run_id, run.session_key, run.session_id, run.started_at, res.outcome, res.reason
            )
            for run, res in zip(runs, results, strict=True)
        )
    return RecoverReport(cutoff, found)


def _span(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- prune ------------------------------------------------------------------------------------


def prune(
    ledger: Ledger,
    older_than: timedelta,
    *,
    export_dir: Path | None = None,
    at: datetime | None = None,
) -> PruneReport:
    """Prune generations that are not current, not running, and untouched (no event)
    for longer than `older_than`; export each transcript to JSONL first when asked."""
    now = at or ledger.clock()
    cutoff = now - older_than
    reason = f"maintenance: untouched for more than {_span(older_than)}"
    if export_dir is not None:
        export_dir.mkdir(parents=True, exist_ok=True)
    done: list[PrunedGeneration] = []
    g = TABLES.generations
    after: tuple[datetime, str] | None = None
    while True:
        query = select(g).where(
            g.c.state != "current",
            g.c.status != "running",
            g.c.pruned_at.is_(None),
            g.c.updated_at < cutoff,
        )
        if after is not None:
            updated, sid = after
            query = query.where(
                or_(g.c.updated_at > updated, and_(g.c.updated_at == updated, g.c.session_id > sid))
            )
        with ledger.database.reading() as connection:
            candidates = [
                GenerationRow(**row._mapping)
                for row in connection.execute(
                    query.order_by(g.c.updated_at, g.c.session_id).limit(100)
                )
            ]
        if not candidates:
            break
        after = (candidates[-1].updated_at, candidates[-1].session_id)
        for generation in candidates:
            export = None
            if export_dir is not None:
                export = str(_export(ledger, generation, export_dir))
            refused = _prune_one(ledger, generation, cutoff, now, reason)
            done.append(
                PrunedGeneration(
                    generation.session_key,
                    generation.session_id,
                    not refused,
                    generation.entry_count,
                    export,
                    refused or None,
                )
            )
    return PruneReport(cutoff, done)


def _prune_one(
    ledger: Ledger, selected: GenerationRow, cutoff: datetime, now: datetime, reason: str
) -> str:
    """One write transaction: re-check the generation under the writer lock, then let the
    aggregate decide (never current, never running, never twice)."""

    def decide(uow: UnitOfWork) -> str:
        row = uow.rowset.generation(selected.session_id)
        if row is None or row.pruned_at is not None:
            return "already pruned"
        if row.updated_at >= cutoff or row.head_hash != selected.head_hash:
            return "changed since it was selected (a late event arrived); left alone"
        conversation = uow.existing(selected.session_key)
        refused = conversation.prune(selected.session_id, at=now, reason=reason, writer=SYSTEM)
        uow.add(conversation)
        return refused

    return ledger._transact(decide)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def _export(ledger: Ledger, generation: GenerationRow, directory: Path) -> Path:
    """The generation's transcript as JSONL, one entry row per line (seq, prevHash,
    entryHash included: the last entryHash is the chain head the prune event seals)."""
    name = generation.session_id
    if not _SAFE_NAME.match(name):
        name = quote(name, safe="")
    target = directory / f"{name}.jsonl"
    partial = directory / f".{name}.jsonl.partial"
    e = TABLES.entries
    with ledger.database.reading() as connection, partial.open("w") as out:
        rows = connection.execution_options(stream_results=True, max_row_buffer=PAGE).execute(
            select(e).where(e.c.session_id == generation.session_id).order_by(e.c.seq)
        )
        view = entry_viewer(generation.session_key)
        for row in rows:
            out.write(json.dumps(_camel(row_values(view(**row._mapping))), default=str) + "\n")
    partial.replace(target)
    return target


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    from pydantic.alias_generators import to_camel

    return {to_camel(k): v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


# -- bindings check ---------------------------------------------------------------------------


def check_bindings(ledger: Ledger, directory: Path, *, fix: bool = False) -> BindingsReport:
    """Probe `<directory>/<cliSessionId>.jsonl` for every current binding; with `fix`,
    drop the dead ones (reason `missing-transcript`, written by `system`)."""
    try:
        if not directory.is_dir():
            raise InvalidEvent("dir", f"{directory} is not a directory")
        root = directory.resolve()
    except (OSError, ValueError) as e:  # an embedded NUL, a path too long, …
        raise InvalidEvent("dir", f"cannot be used: {e}") from None
    checks: list[BindingCheck] = []
    cursor: str | None = None
    while True:
        page = ledger.sessions(limit=500, cursor=cursor)
        for view in page.items:
            for provider, cli_session_id in sorted(view.bindings.items()):
                path = root / f"{cli_session_id}.jsonl"
                # Only a plain file name inside the directory: a binding cannot probe elsewhere.
                alive = bool(_SAFE_NAME.match(cli_session_id)) and path.is_file()
                dropped, reason = False, None
                if not alive and fix:
                    try:
                        ledger.drop_binding(
                            view.session_key, provider, reason="missing-transcript", writer=SYSTEM
                        )
                        dropped = True
                    except LedgerError as error:  # rotated, deleted or dropped meanwhile
                        reason = str(error)
                checks.append(
                    BindingCheck(
                        view.session_key,
                        view.session_id,
                        provider,
                        cli_session_id,
                        str(path),
                        alive,
                        dropped,
                        reason,
                    )
                )
        cursor = page.next_cursor
        if cursor is None:
            return BindingsReport(str(root), checks)
