"""The log folded into the `*_shadow` tables, one page per short transaction (never one
transaction over the whole log), for rebuild and verify; and the page-by-page fold they
and the rebuild's worker processes share.

One rebuild or verify at a time per store: a second one started alongside resets the
shadow under the first, which then fails (StoreUnavailable) rather than swap or compare
rows it did not fold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import sqlalchemy.exc

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.domain.events import LedgerEvent
from sessionledger.infrastructure.database import translate_faults
from sessionledger.infrastructure.store import Store
from sessionledger.projections.projector import Executor, Projector
from sessionledger.projections.tables import SHADOW

T = TypeVar("T")
Progress = Callable[[int], None] | None

PAGE = 2000  # events per shadow transaction (read and decoded before it begins)


class Shadow:
    """The log folded into the `*_shadow` tables, one page per short transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.projector = Projector(SHADOW)

    def side_write(self, work: Callable[[Executor], T]) -> T:
        """A short transaction on the shadow tables. PostgreSQL: without the writer lock
        (commits happen in log order under it, so reading the log needs none). SQLite has
        one writer at a time, so there it queues with the others, a page at a time."""
        database = self.store.database
        try:
            if database.dialect == "sqlite":
                return database.write(work)
            with translate_faults(), database.engine.begin() as connection:
                return work(connection)
        except (RuntimeError, sqlalchemy.exc.IntegrityError) as e:
            raise busy() from e

    def clear(self) -> None:
        def work(executor: Executor) -> None:
            for table in (*reversed(SHADOW.projected), SHADOW.tracking):
                executor.execute(table.delete())

        self.side_write(work)

    def fold(self, on_progress: Progress = None) -> int:
        """Fold pages until the shadow reaches the log head as it was when the fold began
        (busy writers cannot keep it chasing the head); returns its position."""
        store = self.store
        with store.database.reading() as connection:
            target = store.projector.log_head(connection)
            position = self.projector.position(connection)

        def read(after: int) -> Sequence[tuple[int, LedgerEvent]]:
            # Read and decoded outside the page's transaction: committed events never
            # change and commit in log order, so this is the log's next page; the writer
            # lock is held only to fold and write it (decoding was a quarter of a page).
            with store.database.reading() as connection:
                return store.event_log.read(connection, after, PAGE)

        def write(events: Sequence[tuple[int, LedgerEvent]], after: int) -> None:
            self.side_write(self._page(events, after))

        return fold_pages(read, write, position, PAGE, on_progress, until=target)

    def _page(
        self, events: Sequence[tuple[int, LedgerEvent]], after: int
    ) -> Callable[[Executor], None]:
        def page(executor: Executor) -> None:
            # Fails (tracking moved: busy) if another rebuild or verify reset the shadow.
            self.projector.project(executor, self.projector.new_rowset(executor), events, after)

        return page

    def behind(self) -> int:
        """Events in the log the shadow has not folded yet."""
        with self.store.database.reading() as connection:
            head = self.store.projector.log_head(connection)
            return head - self.projector.position(connection)


def busy() -> StoreUnavailable:
    """What a rebuild or verify fails with when another one reset the shadow under it."""
    return StoreUnavailable(
        "another rebuild or verify is using the shadow tables; retry when it is done"
    )


def fold_pages(
    read: Callable[[int], Sequence[tuple[int, LedgerEvent]]],
    write: Callable[[Sequence[tuple[int, LedgerEvent]], int], None],
    after: int,
    page: int,
    on_progress: Progress,
    *,
    until: int | None = None,
) -> int:
    """Fold the log after `after` a page at a time: `read` the events after a position
    (at most `page`), `write` them (folded after the previous position), until a short
    page or the position `until`; the position reached. The serial rebuild and verify
    (into the shadow tables) and each rebuild worker (into its file) fold this way."""
    position = after
    while True:
        events = read(position)
        if events:
            write(events, position)
            position = events[-1][0]
            if on_progress is not None:
                on_progress(len(events))
        if len(events) < page or (until is not None and position >= until):
            return position
