"""Read-side queries over the read-model tables. Never replays the log.

The statements are built once and run on the DBAPI cursor (projections/raw.py): on a
1,000-entry transcript SQLAlchemy's result processing cost five times the select.
Rows are built by position from columns selected in the rows' field order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, or_, select

from sessionledger.domain.values import Status
from sessionledger.projections.raw import RawSelect, in_field_order
from sessionledger.projections.rows import (
    EntryRow,
    EntryView,
    GenerationRow,
    RunRow,
    SessionRow,
    SessionView,
    entry_viewer,
    slot_builder,
)
from sessionledger.projections.tables import ReadModelTables

MAX_PAGE = 1000

_GENERATION = slot_builder(GenerationRow)
_RUN = slot_builder(RunRow)
_SESSION = slot_builder(SessionRow)


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
        self._session = RawSelect(joined.where(s.c.session_key == bindparam("key")))
        self._deleted = RawSelect(
            select(*generation)
            .where(g.c.session_key == bindparam("key"), g.c.state == "deleted")
            .order_by(g.c.opened_position.desc())
            .limit(1)
        )
        self._generation = RawSelect(select(*generation).where(g.c.session_id == bindparam("id")))
        self._generations_of = RawSelect(
            select(*generation)
            .where(g.c.session_key == bindparam("key"))
            .order_by(g.c.opened_position)
        )
        self._run = RawSelect(select(*run).where(r.c.run_id == bindparam("id")))
        self._runs_of = RawSelect(
            select(*run).where(r.c.session_id == bindparam("id")).order_by(r.c.started_position)
        )
        self._entries = RawSelect(
            select(*in_field_order(e, EntryRow))
            .where(e.c.session_id == bindparam("id"))
            .order_by(e.c.seq)
        )
        # sessions(): one statement per combination of filters, built when first used.
        self._pages: dict[tuple[bool, ...], RawSelect] = {}

    def session(self, connection: Connection, session_key: str) -> SessionView | None:
        views = self._session.rows(connection, self._view, key=session_key)
        return views[0] if views else None

    def deleted_generation_of(
        self, connection: Connection, session_key: str
    ) -> GenerationRow | None:
        """The generation a key's deletion tombstoned (the latest, if it was deleted twice).

        Ordered by when it was opened, not by when it was last touched: late events
        keep landing on older generations after a delete.
        """
        rows = self._deleted.rows(connection, _GENERATION, key=session_key)
        return rows[0] if rows else None

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
        shape = tuple(value is not None for value in params.values())
        query = self._pages.get(shape)
        if query is None:
            query = self._pages[shape] = self._page(*shape)
        limit = max(1, min(limit, MAX_PAGE))
        given = {name: value for name, value in params.items() if value is not None}
        views = query.rows(connection, self._view, limit=limit + 1, **given)
        items = views[:limit]
        next_cursor = items[-1].session_key if len(views) > limit else None
        return Page(items, next_cursor)

    def _page(
        self, status: bool, agent: bool, channel: bool, active_since: bool, cursor: bool
    ) -> RawSelect:
        s, g = self.t.sessions, self.t.generations
        query = select(*self._joined_columns).join(g, g.c.session_id == s.c.session_id)
        if status:
            query = query.where(g.c.status == bindparam("status"))
        if agent:
            query = query.where(s.c.agent == bindparam("agent"))
        if channel:
            query = query.where(s.c.channel == bindparam("channel"))
        if active_since:
            # By the interaction clock (invariant 11): heartbeats do not make a session active.
            query = query.where(
                or_(g.c.last_interaction_at >= bindparam("active_since"), g.c.status == "running")
            )
        if cursor:
            query = query.where(s.c.session_key > bindparam("cursor"))
        return RawSelect(query.order_by(s.c.session_key).limit(bindparam("limit")))

    def generation(self, connection: Connection, session_id: str) -> GenerationRow | None:
        rows = self._generation.rows(connection, _GENERATION, id=session_id)
        return rows[0] if rows else None

    def generations_of(self, connection: Connection, session_key: str) -> list[GenerationRow]:
        return self._generations_of.rows(connection, _GENERATION, key=session_key)

    def run(self, connection: Connection, run_id: str) -> RunRow | None:
        rows = self._run.rows(connection, _RUN, id=run_id)
        return rows[0] if rows else None

    def runs_of(self, connection: Connection, session_id: str) -> list[RunRow]:
        return self._runs_of.rows(connection, _RUN, id=session_id)

    def transcript(
        self, connection: Connection, session_key: str, session_ids: list[str]
    ) -> list[EntryView]:
        """Entries of the given generations of `session_key`, generation by generation,
        each in log order."""
        entries: list[EntryView] = []
        for session_id in session_ids:
            entries.extend(self._entries.rows(connection, entry_viewer(session_key), id=session_id))
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
        return SessionView.of(_SESSION(*row[:width]), _GENERATION(*row[width:]))
