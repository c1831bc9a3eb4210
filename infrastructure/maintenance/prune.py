"""Prune old generations, exporting their transcripts first when asked.

A generation that is neither current nor running and has had no event for a while gets
a `generation.pruned` event (written by `system`); the aggregate refuses it for a
current, running or pruned generation, and its fold deletes the generation's entry rows.
The transcript events stay in the log, so the chain stays verifiable: the event carries
the chain head and entry count, which match the last line of the JSONL export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic.alias_generators import to_camel
from sqlalchemy import select

from sessionledger.infrastructure.maintenance.repairs import SAFE_NAME, SYSTEM, after_row, span
from sessionledger.infrastructure.maintenance.shadow import PAGE
from sessionledger.infrastructure.store import Store
from sessionledger.infrastructure.unit_of_work import UnitOfWork
from sessionledger.projections.rows import CAMEL, GenerationRow, entry_viewer, row_values
from sessionledger.projections.tables import TABLES


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


def prune(
    store: Store,
    older_than: timedelta,
    *,
    export_dir: Path | None = None,
    at: datetime,
) -> PruneReport:
    """Prune generations that are not current, not running, and untouched (no event)
    for longer than `older_than` before `at`; export each transcript to JSONL first
    when asked."""
    cutoff = at - older_than
    reason = f"maintenance: untouched for more than {span(older_than)}"
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
            query = query.where(after_row(g.c.updated_at, g.c.session_id, after))
        with store.database.reading() as connection:
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
                export = str(export_transcript(store, generation, export_dir))
            refused = _prune_one(store, generation, cutoff, at, reason)
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
    store: Store, selected: GenerationRow, cutoff: datetime, now: datetime, reason: str
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

    return store.transact(decide)


def export_transcript(store: Store, generation: GenerationRow, directory: Path) -> Path:
    """The generation's transcript as `<directory>/<sessionId>.jsonl`, one entry row per
    line (seq, prevHash, entryHash included: the last entryHash is the chain head the
    prune event seals), written whole or not at all."""
    name = generation.session_id
    if not SAFE_NAME.match(name):
        name = quote(name, safe="")
    target = directory / f"{name}.jsonl"
    partial = directory / f".{name}.jsonl.partial"
    e = TABLES.entries
    with store.database.reading() as connection, partial.open("w") as out:
        rows = connection.execution_options(stream_results=True, max_row_buffer=PAGE).execute(
            select(e).where(e.c.session_id == generation.session_id).order_by(e.c.seq)
        )
        view = entry_viewer(generation.session_key)
        for row in rows:
            out.write(json.dumps(_camel(row_values(view(**row._mapping))), default=str) + "\n")
    partial.replace(target)
    return target


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    return {to_camel(k): v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
