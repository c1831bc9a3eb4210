"""Recover runs whose runner is gone: each run still `running` after a time is closed as
`interrupted` by a `run.ended` event written by `system`, recorded as any fact is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from sessionledger.domain.events import RunEndedFact
from sessionledger.domain.values import MAX_BATCH_EVENTS, digest
from sessionledger.infrastructure.batch import RecordResult, record_batch
from sessionledger.infrastructure.maintenance.repairs import SYSTEM, after_row, span
from sessionledger.infrastructure.store import Store
from sessionledger.infrastructure.unit_of_work import UnitOfWork
from sessionledger.projections.rows import CAMEL, RunRow
from sessionledger.projections.tables import RUNNING, TABLES


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


def recover(store: Store, stale_after: timedelta, *, at: datetime) -> RecoverReport:
    """Close runs still `running` longer than `stale_after` before `at` (their runner is
    gone) as `interrupted`, each with a stopReason, written by `system`: a batch of
    facts per page of runs, recorded as `Ledger.record` records a batch."""
    cutoff = at - stale_after
    found: list[RecoveredRun] = []
    r = TABLES.runs
    after: tuple[datetime, str] | None = None
    while True:
        # The status as a literal: the partial index of running runs serves the order.
        query = select(r).where(RUNNING, r.c.started_at < cutoff)
        if after is not None:
            query = query.where(after_row(r.c.started_at, r.c.run_id, after))
        with store.database.reading() as connection:
            runs = [
                RunRow(**row._mapping)
                for row in connection.execute(
                    query.order_by(r.c.started_at, r.c.run_id).limit(MAX_BATCH_EVENTS)
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
                occurred_at=at,
                writer=SYSTEM,
                outcome="interrupted",
                stop_reason=(
                    f"stale: running since {run.started_at.isoformat()}, longer than "
                    f"{span(stale_after)} with no end reported; closed by recover (runner gone)"
                ),
            )
            for run in runs
        ]
        results = _record(store, facts)
        found.extend(
            RecoveredRun(
                run.run_id, run.session_key, run.session_id, run.started_at, res.outcome, res.reason
            )
            for run, res in zip(runs, results, strict=True)
        )
    return RecoverReport(cutoff, found)


def _record(store: Store, facts: list[RunEndedFact]) -> list[RecordResult]:
    """One batch of facts recorded in one write transaction, as a `record` call's."""

    def decide(uow: UnitOfWork) -> list[RecordResult]:
        return record_batch(uow, facts)

    return store.transact(decide)
