"""Read-side queries over the read-model tables. Never replays the log.

Statements are SQLAlchemy Core, run on the caller's connection; rows are built by
position from columns selected in the rows' field order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, or_, select

from sessionledger.domain.values import Status
from sessionledger.projections.rows import (
    EntryRow,
    EntryView,
    GenerationRow,
    RunRow,
    SessionRow,
    SessionView,
    entry_viewer,
)
from sessionledger.projections.tables import ReadModelTables, in_field_order

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Page:
    items: list[SessionView]
    next_cursor: str | None


class Queries:
    def __init__(self, tables: ReadModelTables) -> None:
        self.t = tables
        s, g, r, e = tables.sessions, tables.generations, tables.runs, tables.entries
        # Rows are built by position, so every statement selects in the rows' field order.
        self._sessions_width = len(s.columns)
        self._joined_columns = [*in_field_order(s, SessionRow), *in_field_order(g, GenerationRow)]
        generation = in_field_order(g, GenerationRow)
        run = in_field_order(r, RunRow)
        joined = select(*self._joined_columns).join(g, g.c.session_id == s.c.session_id)
        self._session = joined.where(s.c.session_key == bindparam("key"))
        self._deleted = (
            select(*generation)
            .where(g.c.session_key == bindparam("key"), g.c.state == "deleted")
            .order_by(g.c.opened_position.desc())
            .limit(1)
        )
        self._generation = select(*generation).where(g.c.session_id == bindparam("id"))
        self._generations_of = (
            select(*generation)
            .where(g.c.session_key == bindparam("key"))
            .order_by(g.c.opened_position)
        )
        self._run = select(*run).where(r.c.run_id == bindparam("id"))
        self._runs_of = (
            select(*run).where(r.c.session_id == bindparam("id")).order_by(r.c.started_position)
        )
        self._entries = (
            select(*in_field_order(e, EntryRow))
            .where(e.c.session_id == bindparam("id"))
            .order_by(e.c.seq)
        )

    def session(self, connection: Connection, session_key: str) -> SessionView | None:
        row = connection.execute(self._session, {"key": session_key}).first()
        return None if row is None else self._view(*row)

    def deleted_generation_of(
        self, connection: Connection, session_key: str
    ) -> GenerationRow | None:
        """The generation a key's deletion tombstoned (the latest, if it was deleted twice).

        Ordered by when it was opened, not by when it was last touched: late events
        keep landing on older generations after a delete.
        """
        row = connection.execute(self._deleted, {"key": session_key}).first()
        return None if row is None else GenerationRow(*row)

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
        params: dict[str, Any] = {
            "status": status,
            "agent": agent,
            "channel": channel,
            "active_since": active_since,
            "cursor": cursor,
        }
        query = self._page(*(value is not None for value in params.values()))
        limit = max(1, min(limit, MAX_PAGE))
        given = {name: value for name, value in params.items() if value is not None}
        views = [
            self._view(*row) for row in connection.execute(query, {"limit": limit + 1, **given})
        ]
        items = views[:limit]
        next_cursor = items[-1].session_key if len(views) > limit else None
        return Page(items, next_cursor)

    def _page(
        self, status: bool, agent: bool, channel: bool, active_since: bool, cursor: bool
    ) -> Select[Any]:
        s, g = self.t.sessions, self.t.generations
        query = select(*self._joined_columns).join(g, g.c.session_id == s.c.session_id)
        if status:
            query = query.where(g.c.status == bindparam("status"))
        if agent:
            query = query.where(s.c.agent == bindparam("agent"))
        if channel:
            query = query.where(s.c.channel == bindparam("channel"))
        if active_since:
            # By the interaction clock (SPEC §4.11): heartbeats do not make a session active.
            query = query.where(
                or_(g.c.last_interaction_at >= bindparam("active_since"), g.c.status == "running")
            )
        if cursor:
            query = query.where(s.c.session_key > bindparam("cursor"))
        return query.order_by(s.c.session_key).limit(bindparam("limit"))

    def generation(self, connection: Connection, session_id: str) -> GenerationRow | None:
        row = connection.execute(self._generation, {"id": session_id}).first()
        return None if row is None else GenerationRow(*row)

    def generations_of(self, connection: Connection, session_key: str) -> list[GenerationRow]:
        rows = connection.execute(self._generations_of, {"key": session_key})
        return [GenerationRow(*row) for row in rows]

    def run(self, connection: Connection, run_id: str) -> RunRow | None:
        row = connection.execute(self._run, {"id": run_id}).first()
        return None if row is None else RunRow(*row)

    def runs_of(self, connection: Connection, session_id: str) -> list[RunRow]:
        return [RunRow(*row) for row in connection.execute(self._runs_of, {"id": session_id})]

    def transcript(
        self, connection: Connection, session_key: str, session_ids: list[str]
    ) -> list[EntryView]:
        """Entries of the given generations of `session_key`, generation by generation,
        each in log order."""
        entries: list[EntryView] = []
        for session_id in session_ids:
            view = entry_viewer(session_key)
            rows = connection.execute(self._entries, {"id": session_id})
            entries.extend(view(*row) for row in rows)
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

    def _view(self, *row: Any) -> SessionView:
        # The join's columns: the pointer's, then its generation's.
        width = self._sessions_width
        return SessionView.of(SessionRow(*row[:width]), GenerationRow(*row[width:]))
