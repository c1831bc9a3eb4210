"""One write transaction: the aggregates it loaded, the events it decided, the rows
they fold into. Commands (infrastructure.ledger) decide through it; `commit` records
and projects in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast
from uuid import UUID

from sqlalchemy import Connection

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.errors import UnknownSession
from sessionledger.domain.events import LedgerEvent, Recorded
from sessionledger.infrastructure.application import LedgerApplication
from sessionledger.infrastructure.identifiers import claim
from sessionledger.projections.fold import Transition
from sessionledger.projections.projector import LogReader, Projector
from sessionledger.projections.rows import SessionView
from sessionledger.projections.state import RowSet


@dataclass(slots=True)
class UnitOfWork:
    """One write transaction: aggregates loaded, events decided, rows to project."""

    app: LedgerApplication
    projector: Projector
    connection: Connection
    read_log: LogReader
    touched: set[UUID]
    conversations: dict[str, Conversation | None] = field(default_factory=dict)
    pending: list[Recorded] = field(default_factory=list)
    # By key: each aggregate with pending events and its version before them.
    changed: dict[str, tuple[Conversation, int]] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    position: int = 0
    rowset: RowSet = field(init=False)

    def __post_init__(self) -> None:
        projector = self.projector
        connection = self.connection
        position, head, epoch = projector.positions(connection)
        fresh = self.app.synchronise(connection, head)
        if projector.rows is not None:
            # Before any catch-up reads rows: events it folds were not ours.
            projector.rows.trust(fresh and head == position, epoch)
        self.position = position
        if head > position:
            # Anything logged but not yet projected (a crash, an older writer) goes first.
            self.position = projector.catch_up(connection, self.read_log)
        self.rowset = projector.new_rowset(connection)

    def conversation(self, session_key: str) -> Conversation | None:
        if session_key not in self.conversations:
            conversation = self.app.conversation(session_key)
            if conversation is not None:
                self.touched.add(conversation.id)
            self.conversations[session_key] = conversation
        return self.conversations[session_key]

    def existing(self, session_key: str) -> Conversation:
        conversation = self.conversation(session_key)
        if conversation is None:
            raise UnknownSession(session_key)
        return conversation

    def add(self, conversation: Conversation) -> list[Recorded]:
        """Take the aggregate's new events, in the order they were decided."""
        events = conversation.collect_events()
        key = conversation.session_key
        known = self.changed.get(key)
        if known is None or known[0] is not conversation:
            # Once per aggregate and commit (hashing a UUID is a Python call).
            self.conversations[key] = conversation
            self.changed[key] = (conversation, conversation.version - len(events))
            self.touched.add(conversation.id)
        self.pending.extend(events)
        return events

    def commit(self) -> None:
        """Record the pending events and project them; a second call has nothing to do.
        The runIds and sessionIds they introduce are taken in the same transaction."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        claim(self.connection, pending)
        changed, self.changed = list(self.changed.values()), {}
        recorded = cast(
            list[tuple[int, LedgerEvent]], self.app.save_conversations(pending, changed)
        )
        self.transitions.extend(
            self.projector.project(self.connection, self.rowset, recorded, self.position)
        )
        self.position = recorded[-1][0]
        self.app.recorded_up_to(self.position)

    def view(self, session_key: str) -> SessionView:
        pointer = self.rowset.session(session_key)
        if pointer is None:
            raise UnknownSession(session_key)
        generation = self.rowset.generation(pointer.session_id)
        assert generation is not None
        return SessionView.of(pointer, generation)
