"""Audit replay: one key's events in log order, each with what it did and the row around it.

It replays the key's own events with the same fold as the live projection (a key's
events only ever touch that key's rows), so the audit cannot tell a different story
from the one the read models were built from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from domain.events import LedgerEvent
from projections.fold import EffectKind
from projections.rows import CAMEL, SessionView
from projections.state import RowSet


@dataclass(frozen=True, slots=True)
class AuditEntry:
    __pydantic_config__ = CAMEL

    position: int
    event_id: str
    type: str
    session_key: str
    session_id: str
    run_id: str | None
    writer: str
    occurred_at: datetime
    recorded_at: datetime
    outcome: EffectKind
    did: str
    before: SessionView | None
    after: SessionView | None


def current_view(rows: RowSet, session_key: str) -> SessionView | None:
    pointer = rows.session(session_key)
    if pointer is None:
        return None
    generation = rows.generation(pointer.session_id)
    assert generation is not None
    return SessionView.of(pointer, generation)


def audit(log: Iterable[tuple[int, LedgerEvent]]) -> list[AuditEntry]:
    """Replay one key's events (in log order) and say what each did."""
    rows = RowSet()
    entries: list[AuditEntry] = []
    for position, event in log:
        before = current_view(rows, event.session_key)
        transition = rows.apply(event, position)
        entries.append(
            AuditEntry(
                position=position,
                event_id=event.event_id,
                type=event.type,
                session_key=event.session_key,
                session_id=event.session_id,
                run_id=event.run_id,
                writer=event.writer,
                occurred_at=event.occurred_at,
                recorded_at=event.timestamp,
                outcome=transition.effect.kind,
                did=transition.effect.note,
                before=before,
                after=current_view(rows, event.session_key),
            )
        )
    return entries
