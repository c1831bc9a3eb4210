"""A large batch is validated, decided, recorded and folded with the cyclic collector at
ease (infrastructure/collector.py `AT_EASE_FROM`), a single command without; either way
the collector is left as it was found."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import sessionledger.infrastructure.batch
import sessionledger.infrastructure.collector
import sessionledger.infrastructure.validation
from sessionledger.domain.events import Fact
from sessionledger.infrastructure.ledger import Ledger
from tests.helpers import assert_replay_equals_live, user_turn

KEY = "agent:main:slack:direct:7"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def appends(session_id: str, count: int, first: int = 1) -> list[dict[str, object]]:
    return [
        user_turn(KEY, session_id, n, parent=None if n == 1 else n - 1, occurred_at=T0)
        for n in range(first, first + count)
    ]


def test_a_large_batch_eases_the_collector_and_restores_it(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation and the record share one window (between two, the restored collector
    scanned the validated facts, which live on into the record, for nothing)."""
    seen: list[tuple[tuple[int, int, int], int]] = []
    decide = sessionledger.infrastructure.batch._record_batches
    opened: list[int] = []
    freeze = gc.freeze

    def spy(*args: object) -> object:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return decide(*args)  # type: ignore[arg-type]

    def counting_freeze() -> None:
        opened.append(gc.get_freeze_count())
        freeze()

    monkeypatch.setattr(sessionledger.infrastructure.batch, "_record_batches", spy)
    monkeypatch.setattr(gc, "freeze", counting_freeze)
    size = sessionledger.infrastructure.collector.AT_EASE_FROM
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        seen.clear()
        opened.clear()
        results = ledger.record(appends(sid, size))
        assert [r.outcome for r in results] == ["applied"] * size
        assert len(opened) == 1  # one window
        ledger.record(appends(sid, 1, first=size + 1))
        assert gc.get_threshold() == (700, 10, 10)
        assert gc.get_freeze_count() == 0
        (eased, eased_frozen), (single, single_frozen) = seen
        assert eased == (50_000, 10, 10) and eased_frozen > 0
        assert single == (700, 10, 10) and single_frozen == 0
        assert_replay_equals_live(ledger)


def test_a_large_batch_is_validated_with_the_collector_at_ease(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, int]] = []
    parse = sessionledger.infrastructure.validation._parse

    def spy(items: list[Any]) -> list[Fact]:
        seen.append(gc.get_threshold())
        return parse(items)

    monkeypatch.setattr(sessionledger.infrastructure.validation, "_parse", spy)
    size = sessionledger.infrastructure.collector.AT_EASE_FROM
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        ledger.record(appends(sid, size))
        ledger.record(appends(sid, size - 1, first=size + 1))
        assert seen == [(50_000, 10, 10), (700, 10, 10)]
        assert gc.get_threshold() == (700, 10, 10)
        assert gc.get_freeze_count() == 0
