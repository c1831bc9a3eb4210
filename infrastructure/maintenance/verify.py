"""Verify a serving store: every transcript hash chain recomputed from the log, then
every read model compared with a fresh fold of the log, in bounded memory.

The log is folded into the `*_shadow` tables page by page (infrastructure.maintenance
.shadow); live and shadow tables are then compared in one read snapshot, row by row in
key order, with the events the shadow has not folded yet folded into an in-memory
overlay over it (projections.verify).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import StoredEvent
from sqlalchemy import Connection, select

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.domain.events import LedgerEvent
from sessionledger.infrastructure.collector import collector_at_ease
from sessionledger.infrastructure.database import translate_faults
from sessionledger.infrastructure.maintenance.shadow import PAGE, Progress, Shadow
from sessionledger.infrastructure.store import Store
from sessionledger.projections.projector import SqlRowLoader
from sessionledger.projections.replay import Mismatch
from sessionledger.projections.rows import CAMEL
from sessionledger.projections.state import RowSet
from sessionledger.projections.tables import PROJECTION_NAME, SHADOW, TABLES
from sessionledger.projections.verify import ChainChecker, compare_tables

MAX_OVERLAY = 5000  # events verify folds in memory on top of the shadow
MAX_LISTED = 1000  # mismatches a report lists (it counts them all)


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


def verify(store: Store, on_progress: Progress = None) -> VerifyReport:
    """Hash chains from the log, then every read model against a fresh fold of the log;
    `report.ok` is False on any mismatch."""
    with collector_at_ease():
        return _verify(store, on_progress)


def _verify(store: Store, on_progress: Progress) -> VerifyReport:
    report = VerifyReport()
    if not _check_chains(store, report, on_progress):
        report.add(
            Mismatch("events", "*", "payload", "events that do not decode", "a decodable log")
        )
        return report
    shadow = Shadow(store)
    shadow.clear()
    try:
        shadow.fold(on_progress)
        _compare(store, shadow, report)
    finally:
        shadow.clear()
    return report


def _check_chains(store: Store, report: VerifyReport, on_progress: Progress) -> bool:
    """Stream the log one aggregate (sessionKey) at a time; False if an event does not decode."""
    events = store.app.events_table
    mapper = store.event_log.mapper
    checker = ChainChecker()
    decodable = True
    current: Any = None
    pending = 0
    with store.database.reading() as connection:
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


def _compare(store: Store, shadow: Shadow, report: VerifyReport) -> None:
    for _attempt in range(20):
        with _snapshot(store) as connection:
            folded = shadow.projector.position(connection)
            live = store.projector.position(connection)
            if folded <= live <= folded + MAX_OVERLAY:
                _compare_in(store, connection, folded, live, report)
                return
        # Writers moved far ahead of the shadow (or the live projection lags it): fold on.
        if live < folded:
            store.catch_up()
        shadow.fold()
    raise StoreUnavailable("verify could not keep up with the writers; retry later")


def _compare_in(
    store: Store, connection: Connection, folded: int, live: int, report: VerifyReport
) -> None:
    """In one snapshot: the shadow (at `folded`) plus the events up to `live`, folded in
    memory, against the live tables (at `live`)."""
    report.position = live
    head = store.projector.log_head(connection)
    if live != head:
        report.add(Mismatch("tracking", PROJECTION_NAME, "position", live, head))
    overlay = RowSet(SqlRowLoader(connection, SHADOW))
    after = folded
    while after < live:
        page = [(p, e) for p, e in store.event_log.read(connection, after, PAGE) if p <= live]
        if not page:
            break
        overlay.prefetch_for(e for _, e in page)
        for position, event in page:
            overlay.apply(event, position)
        after = page[-1][0]
    for mismatch in compare_tables(connection, TABLES, SHADOW, overlay):
        report.add(mismatch)


@contextmanager
def _snapshot(store: Store) -> Iterator[Connection]:
    """One consistent read of every table (PostgreSQL REPEATABLE READ; SQLite's read
    transaction is a snapshot already)."""
    database = store.database
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
