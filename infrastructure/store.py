"""The store a process works on: the database, the event store (the library's
application and its recorders), the projector of the read models and the log reader.

The Python API (infrastructure.ledger) and maintenance (infrastructure.maintenance)
both work through one `Store`. Every write is one transaction (`transact`):

    catch the projection up -> load aggregates -> decide -> record events
    -> fold them into the read models -> move the tracking position -> commit

so a caller's own write is visible as soon as the call returns, on SQLite and
PostgreSQL alike, and a crash at any point leaves either all of it or none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar
from uuid import UUID

from sqlalchemy import Connection

from sessionledger.infrastructure.application import LedgerApplication
from sessionledger.infrastructure.database import Database, translate_faults
from sessionledger.infrastructure.log import EventLog
from sessionledger.infrastructure.schema import UpgradePolicy, ensure_schema
from sessionledger.infrastructure.settings import BUSY_TIMEOUT_SECONDS, database_url
from sessionledger.infrastructure.unit_of_work import UnitOfWork
from sessionledger.projections.projector import Executor, LogReader, Projector, RowCache
from sessionledger.projections.tables import TABLES

T = TypeVar("T")
B = TypeVar("B")
R = TypeVar("R")


class Store:
    """One store: its database, event store, live projector and log, and the write
    transaction every command and every repair runs in."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.app = LedgerApplication(database)
        self.projector = Projector(TABLES, RowCache())
        self.event_log = EventLog(self.app.mapper, self.app.events_table)

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str] | None = None,
        *,
        upgrade: UpgradePolicy = "auto",
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> Store:
        """Open (creating and migrating on first use) the store at `url`, its read models
        caught up with its log. See `Ledger.open` for the arguments."""
        database = Database(database_url(url), busy_timeout=busy_timeout)
        try:
            with translate_faults():
                ensure_schema(database.engine, upgrade)
            store = cls(database)
            store.catch_up()
        except BaseException:
            database.close()
            raise
        return store

    def close(self) -> None:
        self.database.close()

    def transact(self, decide: Callable[[UnitOfWork], T]) -> T:
        """Run `decide` and commit its unit of work, in one write transaction; transient
        conflicts run it again (database.Database.write)."""
        touched: set[UUID] = set()

        def work(connection: Connection) -> T:
            touched.clear()
            uow = self.unit_of_work(connection, touched)
            result = decide(uow)
            uow.commit()
            return result

        return self.database.write(work, on_failure=lambda: self._forget(touched))

    def transact_joined(
        self,
        first: Sequence[B],
        join: Callable[[], Sequence[B]],
        decide: Callable[[UnitOfWork, Sequence[B]], list[R]],
    ) -> list[R]:
        """Group commit's transaction: `decide` the group `first`, then each group `join`
        brings while the transaction is open (until it brings none), each group in a unit
        of work of its own, all in one transaction; one answer per item, in order."""
        taken = list(first)
        touched: set[UUID] = set()

        def work(connection: Connection) -> list[R]:
            touched.clear()
            results: list[R] = []
            group: Sequence[B] = taken  # a retry decides all joined so far again
            while group:
                results.extend(decide(self.unit_of_work(connection, touched), group))
                group = join()
                taken.extend(group)
            return results

        return self.database.write(work, on_failure=lambda: self._forget(touched))

    def unit_of_work(self, connection: Connection, touched: set[UUID]) -> UnitOfWork:
        """A unit of work in the write transaction on `connection`; the aggregates it
        loads go into `touched`, to forget if the transaction fails."""
        return UnitOfWork(self.app, self.projector, connection, self.read_log(connection), touched)

    def read_log(self, executor: Executor) -> LogReader:
        """The log's events after a position (at most a limit), read on `executor`."""
        return lambda after, limit: self.event_log.read(executor, after, limit)

    def catch_up(self) -> int:
        """Fold whatever the log holds beyond the projection's position; the position."""
        return self.transact(lambda uow: uow.position)

    def positions(self) -> tuple[int, int]:
        """(projection position, log head): equal whenever the read models are current."""
        with self.database.reading() as connection:
            return self.projector.position(connection), self.projector.log_head(connection)

    def position(self) -> int:
        """The projection's position: the last log position the read models hold."""
        with self.database.reading() as connection:
            return self.projector.position(connection)

    def _forget(self, touched: set[UUID]) -> None:
        """A transaction failed: nothing it decided or folded was committed."""
        self.app.forget(touched)
        if self.projector.rows is not None:
            self.projector.rows.clear()
