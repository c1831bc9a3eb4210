"""Group commit answers every caller exactly as recording the batches one after the other.

Several threads call `Ledger.record` on one store at once, so the store's CommitQueue
(infrastructure/group_commit.py) decides the batches queued behind the writer together,
in one transaction. A second store, set up alike, records the same batches one call (one
transaction) each, in the order the first store committed them; every caller's answer
and every row must be the same, and the rows must equal a fresh fold of the log.

Batches draw from a small pool of facts, so retries within a batch, across batches and
against the log, eventIds reused for other content, entries that repeat, runs started
twice or in two sessions, facts for archived generations and unknown keys all come up.
Each batch ends with a marker fact of its own (an override on a key nothing else
touches), so its place in the log tells the commit order, and its recordedAt which
batches were decided in one unit of work.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionledger.domain.events import Fact
from sessionledger.infrastructure.batch import RecordResult
from sessionledger.infrastructure.ledger import Ledger
from tests.conftest import PostgresServer
from tests.helpers import assert_replay_equals_live

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
KEYS = ("agent:main:telegram:direct:1", "agent:main:telegram:direct:2")
UNKNOWN_KEY = "agent:main:telegram:direct:9"
MARKER_KEY = "agent:main:telegram:direct:0"
WAIT = 60.0  # seconds: a safety net for a broken queue, never a way to wait for state


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
    # Three callers at least: the ones queued behind the first are decided together.
    group = draw(st.lists(st.lists(pick, min_size=1, max_size=4), min_size=3, max_size=5))
    return before, group


def marked(group: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Each batch with its marker last: always applied, and about no key the rest touch."""
    return [
        [
            *batch,
            {
                "type": "overrides.changed",
                "eventId": f"marker-{n}",
                "sessionKey": MARKER_KEY,
                "sessionId": "marker",
                "occurredAt": at(1),
                "writer": "admin",
                "overrides": {"caller": n},
            },
        ]
        for n, batch in enumerate(group)
    ]


def open_store(url: str) -> Ledger:
    """Both keys resolved, each with an archived generation `sN-old` and a current `sN`;
    the markers' key at generation "marker"."""
    ledger = Ledger.open(url)
    for n, key in enumerate(KEYS):
        ledger.resolve(key, at=T0, session_id=f"s{n}-old")
        ledger.reset(key, session_id=f"s{n}", at=T0)
    ledger.resolve(MARKER_KEY, at=T0, session_id="marker")
    return ledger


class Gate:
    """The store's clock while the callers run, and what makes them overlap: the first
    unit of work that reads it (the first caller's, holding the writer) waits until every
    caller has submitted its batch, so the others queue behind it. Each reading is a new
    moment, after the facts' own times."""

    def __init__(self, callers: int) -> None:
        self.callers = callers
        self.arrived = 0
        self.changed = threading.Condition()
        self.moments = (T0 + timedelta(hours=2, seconds=n) for n in itertools.count())

    def arrive(self) -> None:
        with self.changed:
            self.arrived += 1
            self.changed.notify_all()

    def __call__(self) -> datetime:
        with self.changed:
            assert self.changed.wait_for(lambda: self.arrived >= self.callers, WAIT)
            return next(self.moments)


def record_concurrently(
    ledger: Ledger, group: list[list[dict[str, Any]]]
) -> list[list[RecordResult]]:
    """Each batch recorded by a thread of its own, all at once; each caller's answer."""
    gate = Gate(len(group))
    queue = ledger.commits
    submit: Callable[[list[Fact]], list[RecordResult]] = queue.submit

    def arriving(batch: list[Fact]) -> list[RecordResult]:
        gate.arrive()
        return submit(batch)

    start = threading.Barrier(len(group))
    answers: list[list[RecordResult] | None] = [None] * len(group)
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            start.wait(WAIT)
            answers[n] = ledger.record(group[n])
        except BaseException as error:
            errors.append(error)

    callers = [threading.Thread(target=call, args=(n,), daemon=True) for n in range(len(group))]
    with (
        mock.patch.object(queue, "submit", arriving),
        mock.patch("sessionledger.domain.conversation.utcnow", gate),
    ):
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(WAIT)
    assert not any(caller.is_alive() for caller in callers)
    assert errors == []
    return [answer for answer in answers if answer is not None]


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
) -> int:
    """Record `group` concurrently and one by one in commit order; compare. Returns how
    many batches were decided in a unit of work with another's."""
    group = marked(group)
    with open_store(next(urls)) as one_by_one, open_store(next(urls)) as grouped:
        for ledger in (one_by_one, grouped):
            if before:
                ledger.record(before)
        got = record_concurrently(grouped, group)
        assert len(got) == len(group)
        markers = {
            event.event_id: (position, event.recorded_at)
            for position, event in grouped.log(limit=100_000)
            if event.session_key == MARKER_KEY and event.event_id.startswith("marker-")
        }
        order = sorted(range(len(group)), key=lambda n: markers[f"marker-{n}"][0])
        expected = {n: one_by_one.record(group[n]) for n in order}
        for n in order:
            assert got[n] == expected[n], n
        for key in KEYS:
            assert timeless(grouped.generations(key)) == timeless(one_by_one.generations(key))
            assert timeless(grouped.transcript(key, lineage=True)) == timeless(
                one_by_one.transcript(key, lineage=True)
            )
        for sid in ("s0", "s0-old", "s1", "s1-old"):
            assert timeless(grouped.runs(sid)) == timeless(one_by_one.runs(sid))
        assert grouped.positions() == one_by_one.positions()
        assert_replay_equals_live(grouped)
    moments = [moment for _, moment in markers.values()]
    return sum(moments.count(moment) > 1 for moment in moments)


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


def test_concurrent_callers_are_answered_as_if_recorded_one_after_the_other() -> None:
    shared: list[int] = []

    @settings(max_examples=30, deadline=None)
    @given(batches())
    def check(drawn: tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]) -> None:
        with sqlite_urls() as urls:
            shared.append(check_group_equals_sequence(urls, *drawn))

    check()
    # The callers overlapped: batches were decided together, not merely one by one.
    assert any(shared), shared


@pytest.mark.postgres
def test_concurrent_callers_are_answered_as_if_recorded_one_after_the_other_on_postgres(
    postgres_server: PostgresServer,
) -> None:
    shared: list[int] = []

    @settings(max_examples=5, deadline=None)
    @given(batches())
    def check(drawn: tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]) -> None:
        urls = (postgres_server.create_database() for _ in range(2))
        shared.append(check_group_equals_sequence(urls, *drawn))

    check()
    assert any(shared), shared
