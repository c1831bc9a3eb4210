"""The Python API: `Ledger.open(url)`, commands that record facts, queries that read rows,
and the maintenance of the store (infrastructure.maintenance).

Every command is one write transaction of the store (infrastructure.store `Store.transact`),
so the caller's own write is visible as soon as the call returns, on SQLite and
PostgreSQL alike, and a crash at any point leaves either all of it or none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from sessionledger.domain.conversation import (
    Conversation,
    Resolution,
    conversation_id,
    utcnow,
)
from sessionledger.domain.errors import (
    InvalidEvent,
    SessionDeleted,
    StoreUnavailable,
    UnknownSession,
)
from sessionledger.domain.events import BindingDroppedFact, BindingSetFact, Fact, LedgerEvent
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.domain.values import (
    MAX_BATCH_EVENTS,
    Instant,
    Interaction,
    ResetReason,
    Status,
    Writer,
)
from sessionledger.infrastructure.batch import RecordResult, record_batch, record_batches
from sessionledger.infrastructure.collector import at_ease_for, collector_at_ease
from sessionledger.infrastructure.generation_facts import record_about_current
from sessionledger.infrastructure.group_commit import CommitQueue
from sessionledger.infrastructure.maintenance.bindings import BindingsReport, check_bindings
from sessionledger.infrastructure.maintenance.prune import PruneReport, prune
from sessionledger.infrastructure.maintenance.rebuild import rebuild
from sessionledger.infrastructure.maintenance.recover import RecoverReport, recover
from sessionledger.infrastructure.maintenance.verify import VerifyReport, verify
from sessionledger.infrastructure.schema import UpgradePolicy
from sessionledger.infrastructure.settings import BUSY_TIMEOUT_SECONDS
from sessionledger.infrastructure.store import Store
from sessionledger.infrastructure.unit_of_work import UnitOfWork
from sessionledger.infrastructure.validation import (
    check_new_session_id,
    checked_session_key,
    invalid_input,
    parse_batch,
)
from sessionledger.projections.audit import AuditReport
from sessionledger.projections.audit import report as audit_report
from sessionledger.projections.queries import Page, Queries
from sessionledger.projections.replay import Mismatch, compare, replayed_rows, stored_rows
from sessionledger.projections.reports import StatusReport, status_report
from sessionledger.projections.rows import CAMEL, EntryView, GenerationRow, RunRow, SessionView
from sessionledger.projections.state import RowSet
from sessionledger.projections.tables import TABLES

T = TypeVar("T")
R = TypeVar("R")
# A command's `at`, checked as a fact's time is (Ledger._moment).
_INSTANT: TypeAdapter[datetime] = TypeAdapter(Instant)
MAX_MINUTES = 60 * 24 * 366  # bounds for minute-valued query parameters


@dataclass(frozen=True, slots=True)
class ResolveResult:
    __pydantic_config__ = CAMEL

    session: SessionView
    created: bool
    rotated: bool
    reason: str | None
    previous_session_id: str | None


@dataclass(frozen=True, slots=True)
class ResetResult:
    __pydantic_config__ = CAMEL

    previous_session_id: str
    session_id: str
    session: SessionView


class Ledger:
    """Commands and queries over one `Store`: each command one write transaction of the
    store, each query one read."""

    def __init__(
        self,
        store: Store,
        *,
        policy: FreshnessPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.policy = policy or FreshnessPolicy()
        self.clock = clock
        self.queries = Queries(TABLES)
        self.commits = self._commit_queue()

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str] | None = None,
        *,
        upgrade: UpgradePolicy = "auto",
        policy: FreshnessPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> Ledger:
        """Open (creating and migrating on first use) the store at `url`.

        `url`: a SQLAlchemy URL, a file path (str or pathlib.Path), or None for
        $SESSIONLEDGER_DB or the embedded default. Raises SchemaMismatch for a schema
        this code does not know.
        `busy_timeout`: seconds a write waits for other writers (a locked database)
        before it fails with StoreUnavailable.
        """
        return cls(
            Store.open(url, upgrade=upgrade, busy_timeout=busy_timeout),
            policy=policy,
            clock=clock,
        )

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------

    def record(self, events: Iterable[Fact | Mapping[str, Any]]) -> list[RecordResult]:
        """Record a batch of 1 to 1000 facts; one result per fact, in order.

        Malformed input raises InvalidEvent naming the field (`events[2].entry.role`)
        and records nothing. Facts the domain refuses (unknown run, missing parent
        entry, …) come back `rejected` with a reason; the accepted ones commit together.
        A retried eventId answers as it did the first time and records nothing new.
        Concurrent calls share a transaction and its durable commit (group commit,
        infrastructure.group_commit); each is answered as if it had run alone, in turn.
        """
        facts = events if isinstance(events, list) else list(events)
        # One window for validating and recording: between two, the collector would scan
        # the validated facts once for nothing (they live on into the record).
        return at_ease_for(len(facts), lambda: self.commits.submit(parse_batch(facts)))

    def _commit_queue(self) -> CommitQueue[list[Fact], list[RecordResult]]:
        store = self.store
        return CommitQueue(
            lambda batches, join: store.transact_joined(batches, join, record_batches),
            lambda facts: store.transact(lambda uow: record_batch(uow, facts)),
            size=len,
            limit=MAX_BATCH_EVENTS,
            shared_faults=(StoreUnavailable,),
        )

    def resolve(
        self,
        session_key: str,
        *,
        at: datetime | None = None,
        interaction: Interaction = "user",
        policy: FreshnessPolicy | None = None,
        session_id: str | None = None,
    ) -> ResolveResult:
        """Called on every inbound message: open the key if new, rotate it if expired."""
        key = checked_session_key(session_key)
        now = self._moment(at)
        freshness = policy or self.policy

        def decide(uow: UnitOfWork) -> tuple[bool, Resolution]:
            check_new_session_id(uow, session_id)
            conversation = uow.conversation(key)
            created = conversation is None
            if conversation is None:
                writer: Writer = "ingress" if interaction == "user" else interaction
                conversation = Conversation.open(key, at=now, writer=writer, session_id=session_id)
            resolution = conversation.resolve(
                now=now,
                interaction=interaction,
                policy=freshness,
                new_session_id=None if created else session_id,
            )
            uow.add(conversation)
            return created, resolution

        def finish(uow: UnitOfWork, decided: tuple[bool, Resolution]) -> ResolveResult:
            created, resolution = decided
            return ResolveResult(
                session=uow.view(key),
                created=created,
                rotated=resolution.rotated,
                reason="new" if created else resolution.reason,
                previous_session_id=resolution.previous_session_id,
            )

        return self._transact_then(decide, finish)

    def reset(
        self,
        session_key: str,
        *,
        reason: ResetReason = "reset",
        expected_session_id: str | None = None,
        session_id: str | None = None,
        at: datetime | None = None,
        writer: Writer = "admin",
    ) -> ResetResult:
        """Hard reset (or any rotation): compare-and-swap on `expected_session_id`."""
        key = checked_session_key(session_key)
        now = self._moment(at)

        def decide(uow: UnitOfWork) -> tuple[str, str]:
            check_new_session_id(uow, session_id)
            conversation = uow.existing(key)
            previous, new = conversation.reset(
                reason=reason,
                at=now,
                writer=writer,
                expected_session_id=expected_session_id,
                new_session_id=session_id,
            )
            uow.add(conversation)
            return previous, new

        return self._transact_then(
            decide, lambda uow, ids: ResetResult(ids[0], ids[1], uow.view(key))
        )

    def delete(
        self,
        session_key: str,
        *,
        expected_session_id: str | None = None,
        at: datetime | None = None,
        reason: str | None = None,
        writer: Writer = "admin",
    ) -> str:
        """Tombstone the key; returns the sessionId that was current. CAS like reset."""
        key = checked_session_key(session_key)
        now = self._moment(at)

        def decide(uow: UnitOfWork) -> str:
            conversation = uow.existing(key)
            deleted = conversation.delete(
                at=now, writer=writer, expected_session_id=expected_session_id, reason=reason
            )
            uow.add(conversation)
            return deleted

        return self.store.transact(decide)

    def set_binding(
        self,
        session_key: str,
        provider: str,
        cli_session_id: str,
        *,
        at: datetime | None = None,
        writer: Writer = "admin",
    ) -> RecordResult:
        """Bind the current generation to an external CLI session (for resume)."""
        return record_about_current(
            self.store,
            session_key,
            BindingSetFact,
            at=self._moment(at),
            writer=writer,
            provider=provider,
            cli_session_id=cli_session_id,
        )

    def drop_binding(
        self,
        session_key: str,
        provider: str,
        *,
        reason: str = "dropped",
        at: datetime | None = None,
        writer: Writer = "admin",
    ) -> RecordResult:
        return record_about_current(
            self.store,
            session_key,
            BindingDroppedFact,
            at=self._moment(at),
            writer=writer,
            provider=provider,
            reason=reason,
        )

    def catch_up(self) -> int:
        """Fold whatever the log holds beyond the projection's position."""
        return self.store.catch_up()

    # -- maintenance (infrastructure/maintenance/): every repair is an event ------------

    def rebuild(self, on_progress: Callable[[int], None] | None = None) -> int:
        """Fold the whole log into the shadow tables page by page, then swap them in with
        one short write transaction; the store keeps serving meanwhile. Returns the position."""
        return rebuild(self.store, on_progress)

    def verify(self, on_progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Hash chains from the log and every read model against a fresh fold of the log,
        in bounded memory; `report.ok` is False on any mismatch."""
        return verify(self.store, on_progress)

    def recover(self, stale_after: timedelta, *, at: datetime | None = None) -> RecoverReport:
        """Close runs running longer than `stale_after` as `interrupted` (writer `system`)."""
        return recover(self.store, stale_after, at=self._moment(at))

    def prune(
        self,
        older_than: timedelta,
        *,
        export_dir: str | None = None,
        at: datetime | None = None,
    ) -> PruneReport:
        """Prune old generations that are neither current nor running (a
        `generation.pruned` event each), exporting their transcripts to JSONL first."""
        directory = Path(export_dir) if export_dir is not None else None
        return prune(self.store, older_than, export_dir=directory, at=self._moment(at))

    def check_bindings(self, directory: str, *, fix: bool = False) -> BindingsReport:
        """Probe `<directory>/<cliSessionId>.jsonl` for every current binding; `fix`
        drops the dead ones with reason `missing-transcript`."""
        return check_bindings(self.store, Path(directory), fix=fix, at=self._moment(None))

    # -- queries -----------------------------------------------------------------------

    def session(self, session_key: str) -> SessionView:
        """The current row of a key; UnknownSession or SessionDeleted if there is none."""
        with self.store.database.reading() as connection:
            view = self.queries.session(connection, session_key)
            if view is not None:
                return view
            last = self.queries.deleted_generation_of(connection, session_key)
        if last is not None:
            raise SessionDeleted(session_key, last.session_id)
        raise UnknownSession(session_key)

    def sessions(
        self,
        *,
        status: Status | None = None,
        agent: str | None = None,
        channel: str | None = None,
        active_within_minutes: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        active_since = None
        if active_within_minutes is not None:
            if not 1 <= active_within_minutes <= MAX_MINUTES:
                raise InvalidEvent("activeWithinMinutes", f"must be between 1 and {MAX_MINUTES}")
            active_since = self.clock() - timedelta(minutes=active_within_minutes)
        with self.store.database.reading() as connection:
            return self.queries.sessions(
                connection,
                status=status,
                agent=agent,
                channel=channel,
                active_since=active_since,
                limit=limit,
                cursor=cursor,
            )

    def generation(self, session_id: str) -> GenerationRow | None:
        with self.store.database.reading() as connection:
            return self.queries.generation(connection, session_id)

    def generations(self, session_key: str) -> list[GenerationRow]:
        with self.store.database.reading() as connection:
            return self.queries.generations_of(connection, session_key)

    def run(self, run_id: str) -> RunRow | None:
        with self.store.database.reading() as connection:
            return self.queries.run(connection, run_id)

    def runs(self, session_id: str) -> list[RunRow]:
        with self.store.database.reading() as connection:
            return self.queries.runs_of(connection, session_id)

    def transcript(
        self, session_key: str, *, session_id: str | None = None, lineage: bool = False
    ) -> list[EntryView]:
        """Entries of one generation (default: the current one), or of its whole lineage."""
        with self.store.database.reading() as connection:
            if session_id is None:
                view = self.queries.session(connection, session_key)
                if view is None:
                    last = self.queries.deleted_generation_of(connection, session_key)
                    if last is None:
                        raise UnknownSession(session_key)
                    session_id = last.session_id
                else:
                    session_id = view.session_id
            generation = self.queries.generation(connection, session_id)
            if generation is None or generation.session_key != session_key:
                raise UnknownSession(session_key)
            ids = self.queries.lineage(connection, session_id) if lineage else [session_id]
            return self.queries.transcript(connection, session_key, ids)

    def log(self, after: int = 0, limit: int = 1000) -> list[tuple[int, LedgerEvent]]:
        """Recorded events in log order, with their positions."""
        with self.store.database.reading() as connection:
            return self.store.event_log.read(connection, after, limit)

    def audit(
        self,
        session_key: str,
        *,
        run_id: str | None = None,
        as_of: datetime | None = None,
        position: int | None = None,
    ) -> AuditReport:
        """Every event of a key (all generations), or of one run, in log order: what each
        did, the rows before and after, the anomalies, and every row of the key as it
        stood at the end. `as_of` (by recordedAt, timezone-aware) or `position` stops
        the replay there, reconstructing the rows as they were then."""
        if as_of is not None and position is not None:
            raise InvalidEvent("asOf", "give asOf or position, not both")
        if as_of is not None:
            self._moment(as_of, "asOf")
        if position is not None and position < 0:
            raise InvalidEvent("position", "must be 0 or more")
        with collector_at_ease():  # a quarter of an audit's CPU was the collector's
            with self.store.database.reading() as connection:
                events = self.store.event_log.read_aggregate(
                    connection, conversation_id(session_key)
                )
            if not events:
                raise UnknownSession(session_key)
            if run_id is not None and not any(e.run_id == run_id for _, e in events):
                raise InvalidEvent("runId", f"no run {run_id!r} in {session_key!r}")
            return audit_report(session_key, events, run_id=run_id, as_of=as_of, position=position)

    def status_report(
        self, *, stuck_after_minutes: int = 15, window_minutes: int = 60
    ) -> StatusReport:
        """The operator's report from indexed read models (see projections.reports)."""
        if not 1 <= stuck_after_minutes <= MAX_MINUTES:
            raise InvalidEvent("stuckAfterMinutes", f"must be between 1 and {MAX_MINUTES}")
        if not 1 <= window_minutes <= MAX_MINUTES:
            raise InvalidEvent("windowMinutes", f"must be between 1 and {MAX_MINUTES}")
        with self.store.database.reading() as connection:
            return status_report(
                connection,
                TABLES,
                now=self.clock(),
                stuck_after=timedelta(minutes=stuck_after_minutes),
                window=timedelta(minutes=window_minutes),
            )

    def replay_mismatches(self) -> list[Mismatch]:
        """Differences between the stored read models and a fresh fold of the whole log."""
        with self.store.database.reading() as connection:
            stored = stored_rows(connection, TABLES)
            rows = RowSet()
            after = 0
            while page := self.store.event_log.read(connection, after, 1000):
                for position, event in page:
                    rows.apply(event, position)
                after = page[-1][0]
        return compare(stored, replayed_rows(rows))

    def positions(self) -> tuple[int, int]:
        """(projection position, log head): equal whenever the read models are current."""
        return self.store.positions()

    def projection_lag(self) -> int:
        position, head = self.positions()
        return head - position

    def position(self) -> int:
        return self.store.position()

    # -- plumbing ----------------------------------------------------------------------

    def _transact_then(
        self, decide: Callable[[UnitOfWork], T], finish: Callable[[UnitOfWork, T], R]
    ) -> R:
        """Run a command in one write transaction; `finish` reads the projected rows."""

        def decide_then_finish(uow: UnitOfWork) -> R:
            result = decide(uow)
            uow.commit()
            return finish(uow, result)

        return self.store.transact(decide_then_finish)

    def _moment(self, at: datetime | None, field: str = "at") -> datetime:
        """`at`, or the clock's now when it is None: an `Instant` as a fact's time must be
        (a timezone, and a UTC date a datetime can hold: the fold and the reads convert
        to UTC), or InvalidEvent naming `field` before anything is decided."""
        if at is None:
            return self.clock()
        try:
            return _INSTANT.validate_python(at)
        except ValidationError as e:
            raise invalid_input(e.errors(include_url=False), within=(field,)) from None


__all__ = [
    "Ledger",
    "RecordResult",
    "ResetResult",
    "ResolveResult",
    "StoreUnavailable",
    "UnitOfWork",
    "parse_batch",
]
