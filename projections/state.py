"""A working set of read-model rows that the fold reads and its transitions update.

Rows come from a loader (the database, for the live projector and the rebuild) or
from nowhere (an in-memory replay, for audits and tests). The set remembers which
rows it changed and which already existed, so a writer knows what to insert,
update or delete.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from sessionledger.domain.events import LedgerEvent
from sessionledger.projections.fold import Transition, fold
from sessionledger.projections.rows import EntryRow, GenerationRow, ReceiptRow, RunRow, SessionRow

K = TypeVar("K")
V = TypeVar("V")


class LoaderFn(Protocol[K, V]):
    def __call__(self, keys: list[K], /) -> dict[K, V]: ...


class RowLoader(Protocol):
    def load_sessions(self, keys: Iterable[str]) -> dict[str, SessionRow]: ...

    def load_generations(self, session_ids: Iterable[str]) -> dict[str, GenerationRow]: ...

    def load_runs(self, run_ids: Iterable[str]) -> dict[str, RunRow]: ...


@dataclass(slots=True)
class Table(Generic[K, V]):
    """Rows of one kind: what is known, what changed, what exists in storage."""

    rows: dict[K, V | None] = field(default_factory=dict)
    stored: set[K] = field(default_factory=set)
    dirty: set[K] = field(default_factory=set)

    def put(self, key: K, row: V | None) -> None:
        self.rows[key] = row
        self.dirty.add(key)

    def changes(self) -> tuple[list[V], list[V], list[K]]:
        """(inserts, updates, deletes) since the last flush."""
        inserts: list[V] = []
        updates: list[V] = []
        deletes: list[K] = []
        for key in self.dirty:
            row = self.rows[key]
            if row is None:
                if key in self.stored:
                    deletes.append(key)
            elif key in self.stored:
                updates.append(row)
            else:
                inserts.append(row)
        return inserts, updates, deletes

    def flushed(self) -> None:
        for key in self.dirty:
            if self.rows[key] is None:
                self.stored.discard(key)
            else:
                self.stored.add(key)
        self.dirty.clear()


class RowSet:
    def __init__(self, loader: RowLoader | None = None, *, receipts: bool = True) -> None:
        """receipts=False: fold without receipt rows, for a replay that writes and shows
        none (the audit)."""
        self.loader = loader
        self.with_receipts = receipts
        self.sessions: Table[str, SessionRow] = Table()
        self.generations: Table[str, GenerationRow] = Table()
        self.runs: Table[str, RunRow] = Table()
        self.entries: list[EntryRow] = []
        self.receipts: list[ReceiptRow] = []
        self.pruned: list[str] = []  # generations whose stored entries must go

    # ReadState -------------------------------------------------------------------------

    def session(self, session_key: str) -> SessionRow | None:
        if session_key not in self.sessions.rows:
            self.prefetch(keys=[session_key])
        return self.sessions.rows.get(session_key)

    def generation(self, session_id: str) -> GenerationRow | None:
        if session_id not in self.generations.rows:
            self.prefetch(session_ids=[session_id])
        return self.generations.rows.get(session_id)

    def run(self, run_id: str) -> RunRow | None:
        if run_id not in self.runs.rows:
            self.prefetch(run_ids=[run_id])
        return self.runs.rows.get(run_id)

    # loading ---------------------------------------------------------------------------

    def prefetch(
        self,
        keys: Iterable[str] = (),
        session_ids: Iterable[str] = (),
        run_ids: Iterable[str] = (),
    ) -> None:
        """Load, in one query per table, the rows not yet known."""
        _load(self.sessions, keys, self.loader.load_sessions if self.loader else None)
        _load(self.generations, session_ids, self.loader.load_generations if self.loader else None)
        _load(self.runs, run_ids, self.loader.load_runs if self.loader else None)

    def prefetch_for(self, events: Iterable[LedgerEvent]) -> None:
        events = list(events)
        generations = {e.session_id for e in events}
        self.prefetch(
            keys={e.session_key for e in events},
            session_ids=generations,
            run_ids={e.run_id for e in events if e.run_id is not None},
        )
        # Ending a run may move the row's focus to another active run.
        active = {
            run_id
            for sid in generations
            if (g := self.generations.rows.get(sid)) is not None
            for run_id in g.active_run_ids
        }
        self.prefetch(run_ids=active)

    # applying --------------------------------------------------------------------------

    def apply(self, event: LedgerEvent, position: int) -> Transition:
        transition = fold(self, event, position, receipts=self.with_receipts)
        if transition.session is not None:
            self.sessions.put(transition.session.session_key, transition.session)
        if transition.deleted_key is not None:
            self.sessions.put(transition.deleted_key, None)
        for generation in transition.generations:
            self.generations.put(generation.session_id, generation)
        if transition.run is not None:
            self.runs.put(transition.run.run_id, transition.run)
        if transition.entry is not None:
            self.entries.append(transition.entry)
        if transition.pruned_session_id is not None:
            sid = transition.pruned_session_id
            self.entries = [e for e in self.entries if e.session_id != sid]
            self.pruned.append(sid)
        if transition.receipt is not None:
            self.receipts.append(transition.receipt)
        return transition

    def flushed(self) -> None:
        self.sessions.flushed()
        self.generations.flushed()
        self.runs.flushed()
        self.entries.clear()
        self.receipts.clear()
        self.pruned.clear()


def _load(
    table: Table[K, V],
    wanted: Iterable[K],
    loader: LoaderFn[K, V] | None,
) -> None:
    missing = [k for k in wanted if k not in table.rows]
    if not missing:
        return
    found = loader(missing) if loader else {}
    for key in missing:
        row = found.get(key)
        table.rows[key] = row
        if row is not None:
            table.stored.add(key)
