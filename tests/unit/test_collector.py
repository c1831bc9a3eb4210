"""A rebuild, verify or audit eases the cyclic garbage collector while it runs and leaves
it as it found it: thresholds and frozen objects restored, also after a failure, with folds
overlapping, and with objects someone else froze before."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sessionledger.domain.errors import UnknownSession
from sessionledger.infrastructure.collector import collector_at_ease
from sessionledger.infrastructure.ledger import Ledger


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_eased_while_folding_and_restored_after() -> None:
    gc.set_threshold(700, 10, 10)
    with collector_at_ease():
        assert gc.get_threshold() == (50_000, 10, 10)
        assert gc.get_freeze_count() > 0
        with collector_at_ease():  # another fold, overlapping
            assert gc.get_threshold() == (50_000, 10, 10)
        assert gc.get_threshold() == (50_000, 10, 10)  # the first is still folding
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_restored_after_a_failure() -> None:
    gc.set_threshold(1000, 5, 7)
    with pytest.raises(ZeroDivisionError), collector_at_ease():
        1 / 0  # noqa: B018
    assert gc.get_threshold() == (1000, 5, 7)
    assert gc.get_freeze_count() == 0


def test_objects_frozen_by_someone_else_stay_frozen() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with collector_at_ease():
        pass
    assert gc.get_freeze_count() > frozen // 2  # not unfrozen (a few may have been freed)


def test_rebuild_verify_and_audit_leave_the_collector_as_they_found_it(sqlite_url: str) -> None:
    gc.set_threshold(700, 10, 10)
    ledger = Ledger.open(sqlite_url)
    try:
        ledger.resolve("agent:main:main")
        ledger.rebuild()
        assert ledger.verify().ok
        assert ledger.audit("agent:main:main").entries
        with pytest.raises(UnknownSession):
            ledger.audit("agent:main:nobody")
    finally:
        ledger.close()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
