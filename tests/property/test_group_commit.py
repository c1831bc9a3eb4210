"""Group commit answers every batch exactly as recording the batches one after the other.

Two stores set up alike; one records the batches one call (one transaction) each, the
other decides them as one group (`record_batches` in one unit of work, what the
CommitQueue runs for callers queued behind the writer). Batches draw from a small pool of
facts, so retries within a batch, across batches and against the log, eventIds reused for
other content, entries that repeat, runs started twice or in two sessions, facts for
archived generations and unknown keys all come up.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionledger.infrastructure.batch import record_batches
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.validation import parse_batch
from tests.conftest import PostgresServer
from tests.helpers import assert_replay_equals_live

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
KEYS = ("agent:main:telegram:direct:1", "agent:main:telegram:direct:2")
UNKNOWN_KEY = "agent:main:telegram:direct:9"


def at(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


@st.composite
def facts(draw: st.DrawFn) -> dict[str, Any]:
    key_number = draw(st.integers(0, len(KEYS) - 1))
    key = draw(st.sampled_from([KEYS[key_number]] * 6 + [UNKNOWN_KEY]))
    session_id = draw(st.sampled_from([f"s{key_number}"] * 4 + [f"s{key_number}-old", "nope"]))
    kind = draw(st.sampled_from(["transcript.appended"] * 3 + ["run.started", "run.ended"]))
    fact: dict[str, Any] = {
        "type": kind,
        "eventId": f"e{draw(st.integers(0, 7))}",
        "sessionKey": key,
        "sessionId": session_id,
        "occurredAt": at(draw(st.integers(1, 3))),
        "writer": "runner",
    }
    if kind == "transcript.appended":
        fact["entry"] = {
            "id": f"m{draw(st.integers(0, 3))}",
            "parentId": draw(st.sampled_from([None, "m0", "m1", "m2"])),
            "role": "user",
            "content": draw(st.sampled_from(["a", "b"])),
            "timestamp": at(1),
        }
    elif kind == "run.started":
        fact.update(runId=f"r{draw(st.integers(0, 1))}", trigger="user")
    else:
        fact.update(runId=f"r{draw(st.integers(0, 1))}", outcome="done")
    return fact


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """Facts recorded before the group, and the group's batches (drawn from one pool)."""
    pool = draw(st.lists(facts(), min_size=1, max_size=8))
    pick = st.sampled_from(pool)
    before = draw(st.lists(pick, max_size=3))
    group = draw(st.lists(st.lists(pick, min_size=1, max_size=4), min_size=2, max_size=5))
    return before, group


def open_store(url: str) -> Ledger:
    """Both keys resolved, each with an archived generation `sN-old` and a current `sN`."""
    ledger = Ledger.open(url)
    for n, key in enumerate(KEYS):
        ledger.resolve(key, at=T0, session_id=f"s{n}-old")
        ledger.reset(key, session_id=f"s{n}", at=T0)
    return ledger


def timeless(rows: Sequence[Any]) -> list[Any]:
    """Rows without the times the store stamped when it recorded (the wall clock)."""
    recorded = T0 + timedelta(hours=1)  # the facts of this test happen at T0 + seconds
    return [
        replace(
            row,
            **{
                f.name: None
                for f in fields(row)
                if isinstance(getattr(row, f.name), datetime) and getattr(row, f.name) > recorded
            },
        )
        for row in rows
    ]


def check_group_equals_sequence(
    urls: Iterator[str], before: list[dict[str, Any]], group: list[list[dict[str, Any]]]
) -> None:
    with open_store(next(urls)) as one_by_one, open_store(next(urls)) as grouped:
        for ledger in (one_by_one, grouped):
            if before:
                ledger.record(before)
        expected = [one_by_one.record(batch) for batch in group]
        parsed = [parse_batch(batch) for batch in group]
        got = grouped.store.transact(lambda uow: record_batches(uow, parsed))
        assert got == expected
        for key in KEYS:
            assert timeless(grouped.generations(key)) == timeless(one_by_one.generations(key))
            assert timeless(grouped.transcript(key, lineage=True)) == timeless(
                one_by_one.transcript(key, lineage=True)
            )
        for sid in ("s0", "s0-old", "s1", "s1-old"):
            assert timeless(grouped.runs(sid)) == timeless(one_by_one.runs(sid))
        assert grouped.positions() == one_by_one.positions()
        assert_replay_equals_live(grouped)


@functools.cache
def sqlite_template() -> Path:
    """A migrated SQLite store to copy: migrating a new file per example costs more than
    the example."""
    path = Path(tempfile.mkdtemp(prefix="group-commit-")) / "template.db"
    Ledger.open(f"sqlite:///{path}").close()
    return path


@contextmanager
def sqlite_urls() -> Iterator[Iterator[str]]:
    with tempfile.TemporaryDirectory() as directory:
        copies = [Path(directory) / f"{n}.db" for n in range(2)]
        for copy in copies:
            shutil.copyfile(sqlite_template(), copy)
        yield (f"sqlite:///{copy}" for copy in copies)


@settings(max_examples=30, deadline=None)
@given(batches())
def test_grouped_batches_are_answered_as_recorded_one_after_the_other(
    drawn: tuple[list[dict[str, Any]], list[list[dict[str, Any]]]],
) -> None:
    with sqlite_urls() as urls:
        check_group_equals_sequence(urls, *drawn)


@pytest.mark.postgres
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches())
def test_grouped_batches_are_answered_as_recorded_one_after_the_other_on_postgres(
    postgres_server: PostgresServer,
    drawn: tuple[list[dict[str, Any]], list[list[dict[str, Any]]]],
) -> None:
    check_group_equals_sequence((postgres_server.create_database() for _ in range(2)), *drawn)
