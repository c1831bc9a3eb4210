"""Read-side queries over the read-model tables. Never replays the log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, or_, select

from domain.values import Status
from projections.rows import EntryRow, GenerationRow, RunRow, SessionRow, SessionView
from projections.tables import ReadModelTables

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Page:
    items: list[SessionView]
    next_cursor: str | None


class Queries:
    def __init__(self, tables: ReadModelTables) -> None:
        self.t = tables

    def session(self, connection: Connection, session_key: str) -> SessionView | None:
        s, g = self.t.sessions, self.t.generations
        row = connection.execute(
            select(s, g)
            .join(g, g.c.session_id == s.c.session_id)
            .where(s.c.session_key == session_key)
        ).first()
        return self._view(row) if row is not None else None

    def deleted_generation_of(
        self, connection: Connection, session_key: str
    ) -> GenerationRow | None:
        """The generation a key's deletion tombstoned (the latest, if it was deleted twice).

        Ordered by when it was opened, not by when it was last touched: late events
        keep landing on older generations after a delete.
        """
        g = self.t.generations
        row = connection.execute(
            select(g)
            .where(g.c.session_key == session_key, g.c.state == "deleted")
            .order_by(g.c.opened_position.desc())
            .limit(1)
        ).first()
        return GenerationRow(**row._mapping) if row is not None else None

    def sessions(
        self,
        connection: Connection,
        *,
        status: Status | None = None,
        agent: str | None = None,
        channel: str | None = None,
        active_since: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Sessions ordered by key; `cursor` is the last key of the previous page."""
        s, g = self.t.sessions, self.t.generations
        query = select(s, g).join(g, g.c.session_id == s.c.session_id)
        if status is not None:
            query = query.where(g.c.status == status)
        if agent is not None:
            query = query.where(s.c.agent == agent)
        if channel is not None:
            query = query.where(s.c.channel == channel)
        if active_since is not None:
            # By the interaction clock (SPEC §4.11): heartbeats do not make a session active.
            query = query.where(
                or_(g.c.last_interaction_at >= active_since, g.c.status == "running")
            )
        if cursor is not None:
            query = query.where(s.c.session_key > cursor)
        limit = max(1, min(limit, MAX_PAGE))
        rows = connection.execute(query.order_by(s.c.session_key).limit(limit + 1)).all()
        items = [self._view(r) for r in rows[:limit]]
        next_cursor = items[-1].session_key if len(rows) > limit else None
        return Page(items, next_cursor)

    def generation(self, connection: Connection, session_id: str) -> GenerationRow | None:
        g = self.t.generations
        row = connection.execute(select(g).where(g.c.session_id == session_id)).first()
        return GenerationRow(**row._mapping) if row is not None else None

    def generations_of(self, connection: Connection, session_key: str) -> list[GenerationRow]:
        g = self.t.generations
        rows = connection.execute(
            select(g).where(g.c.session_key == session_key).order_by(g.c.opened_position)
        )
        return [GenerationRow(**r._mapping) for r in rows]

    def run(self, connection: Connection, run_id: str) -> RunRow | None:
        r = self.t.runs
        row = connection.execute(select(r).where(r.c.run_id == run_id)).first()
        return RunRow(**row._mapping) if row is not None else None

    def runs_of(self, connection: Connection, session_id: str) -> list[RunRow]:
        r = self.t.runs
        rows = connection.execute(
            select(r).where(r.c.session_id == session_id).order_by(r.c.started_position)
        )
        return [RunRow(**x._mapping) for x in rows]

    def transcript(self, connection: Connection, session_ids: list[str]) -> list[EntryRow]:
        """Entries of the given generations, generation by generation, each in log order."""
        e = self.t.entries
        entries: list[EntryRow] = []
        for session_id in session_ids:
            rows = connection.execute(
                select(e).where(e.c.session_id == session_id).order_by(e.c.seq)
            ).all()
            # Columns are declared in the row's field order (tables.py), so build by position.
            entries.extend(EntryRow(*row) for row in rows)
        return entries

    def lineage(self, connection: Connection, session_id: str) -> list[str]:
        """The sessionIds from the first generation of a lineage up to `session_id`."""
        chain: list[str] = []
        cursor: str | None = session_id
        while cursor is not None and cursor not in chain:
            generation = self.generation(connection, cursor)
            if generation is None:
                break
            chain.append(cursor)
            cursor = generation.previous_session_id
        return list(reversed(chain))

    def _view(self, row: Row[Any]) -> SessionView:
        # The join repeats column names (session_id, …): address columns, not names.
        mapping = row._mapping
        session = SessionRow(**{c.name: mapping[c] for c in self.t.sessions.columns})
        generation = GenerationRow(**{c.name: mapping[c] for c in self.t.generations.columns})
        return SessionView.of(session, generation)
