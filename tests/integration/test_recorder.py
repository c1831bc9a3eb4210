"""The events recorder stays the library's: `insert_events` takes StoredEvents and
answers their positions, although the ledger itself records plain payloads
on SQLite and PostgreSQL alike."""

from __future__ import annotations

from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from sqlalchemy import Connection, select

from sessionledger.infrastructure.application import LedgerEventRecorder
from sessionledger.infrastructure.ledger import Ledger


class _Abort(Exception):
    """Rolls the test's write transaction back: its events fold into no session."""


def test_insert_events_records_stored_events_in_order(ledger: Ledger) -> None:
    recorder = ledger.store.app.recorder
    assert isinstance(recorder, LedgerEventRecorder)
    table = recorder.events_record_cls.__table__
    originator = uuid4()
    stored = [
        StoredEvent(
            originator_id=originator, originator_version=v, topic="t", state=b'{"v":%d}' % v
        )
        for v in (1, 2, 3)
    ]

    def work(connection: Connection) -> None:
        head = ledger.store.projector.log_head(connection)
        positions = recorder.insert_events(stored)
        assert list(positions) == [head + 1, head + 2, head + 3]
        rows = connection.execute(
            select(table.c.id, table.c.originator_version, table.c.topic, table.c.state)
            .where(table.c.originator_id == originator)
            .order_by(table.c.id)
        ).all()
        assert [(r[0], r[1], r[2], bytes(r[3])) for r in rows] == [
            (head + v, v, "t", b'{"v":%d}' % v) for v in (1, 2, 3)
        ]
        raise _Abort

    with pytest.raises(_Abort):
        ledger.store.database.write(work)
    assert ledger.positions()[1] == 0  # rolled back: the log is as it was


def test_library_code_runs_in_the_write_transaction(ledger: Ledger) -> None:
    """The datastore's scoped session (`Database.sessions`) is the write transaction's:
    the library's ORM queries see what the transaction wrote, and the session goes with
    the transaction."""
    recorder = ledger.store.app.recorder
    assert isinstance(recorder, LedgerEventRecorder)
    record = recorder.events_record_cls
    stored = StoredEvent(originator_id=uuid4(), originator_version=1, topic="t", state=b"{}")

    def work(connection: Connection) -> None:
        (position,) = recorder.insert_events([stored])
        with recorder.datastore.transaction(commit=True) as session:
            assert session.connection() is connection
            found = session.query(record).filter(record.id == position).one()
            assert (found.originator_id, found.topic) == (stored.originator_id, "t")
        raise _Abort

    with pytest.raises(_Abort):
        ledger.store.database.write(work)
    assert not ledger.store.database.sessions.registry.has()
    assert ledger.positions()[1] == 0  # the library committed nothing of it
