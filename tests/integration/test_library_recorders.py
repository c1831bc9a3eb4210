"""The library's own recorder test cases (eventsourcing.tests.persistence), run against
our recorders on a migrated SQLite file and on PostgreSQL: the snapshot recorder as an
`AggregateRecorder`, the events recorder as an `ApplicationRecorder`.

The library calls a recorder outside any transaction of ours here, so each call runs
in a write transaction of its own (as the library's recorders do); inside the ledger's
write transaction they run on its connection (tests/integration/test_recorder.py).
Our recorders are neither tracking nor process recorders (the read models' tracking
position is the projector's, docs/architecture.md), so those cases do not apply.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from eventsourcing.persistence import AggregateRecorder, ApplicationRecorder
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
)

from sessionledger.infrastructure.application import LedgerEventRecorder, LedgerSnapshotRecorder
from sessionledger.infrastructure.ledger import Ledger


class OnStore:
    """A freshly migrated store per test, at the URL the fixture `url_fixture` gives."""

    url_fixture: ClassVar[str]
    ledger: Ledger

    @pytest.fixture(autouse=True)
    def store(self, request: pytest.FixtureRequest) -> Iterator[None]:
        self.ledger = Ledger.open(str(request.getfixturevalue(self.url_fixture)))
        try:
            yield
        finally:
            self.ledger.close()


class OnSQLite(OnStore):
    url_fixture = "sqlite_url"


@pytest.mark.postgres
class OnPostgres(OnStore):
    """On the test run's PostgreSQL server."""

    url_fixture = "postgres_url"


def snapshot_recorder(ledger: Ledger) -> AggregateRecorder:
    assert ledger.store.app.snapshots is not None
    recorder = ledger.store.app.snapshots.recorder
    assert isinstance(recorder, LedgerSnapshotRecorder)
    return recorder


def events_recorder(ledger: Ledger) -> ApplicationRecorder:
    recorder = ledger.store.app.recorder
    assert isinstance(recorder, LedgerEventRecorder)
    return recorder


class TestSnapshotRecorderOnSQLite(OnSQLite, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return snapshot_recorder(self.ledger)


class TestSnapshotRecorderOnPostgres(OnPostgres, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return snapshot_recorder(self.ledger)


class TestEventRecorderOnSQLite(OnSQLite, ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        return events_recorder(self.ledger)


class TestEventRecorderOnPostgres(OnPostgres, ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        return events_recorder(self.ledger)
