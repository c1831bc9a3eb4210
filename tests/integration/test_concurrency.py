"""Co-tenants never collide (docs/invariants.md, rule 6).

Four processes of eight writer threads each (heartbeat, cron, ingress and runner
writers) append to the same session at the same moment. Every append is
acknowledged, none is lost, each writer's entries keep its own order, and replay
equals live. A reset racing the writers is a real takeover: in-flight appends come
back `archived` with the new sessionId, never as an error.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from sessionledger.infrastructure.ledger import Ledger
from tests.helpers import assert_replay_equals_live
from tests.integration.workers.process import Worker

pytestmark = pytest.mark.slow

KEY = "agent:main:telegram:direct:4242"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
PROCESSES = 4
THREADS = 8


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def start_writers(
    workers: list[Worker], url: str, session_id: str, appends: int, *stop: str
) -> list[Worker]:
    """Start the processes, wait until each has opened the store, then let all go at once."""
    for proc in range(PROCESSES):
        workers.append(
            Worker(
                "append_worker",
                url,
                KEY,
                session_id,
                str(proc),
                str(THREADS),
                str(appends),
                *stop,
                stdin=True,
            )
        )
    for worker in workers:
        worker.wait_for(lambda w=worker: w.count("ready") == 1, "the worker to open the store")  # type: ignore[misc]
    for worker in workers:
        worker.send("go")
    return workers


def finish(workers: list[Worker]) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    for worker in workers:
        code = worker.finish()
        errors = [line for line in worker.lines if "error" in line]
        assert not errors, f"{errors[0]['error']}\n{errors[0]['trace']}"
        assert code == 0, worker.stderr()
        answers.extend(line for line in worker.lines if "w" in line)
    return answers


def by_writer(answers: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for answer in answers:
        grouped[answer["w"]].append(answer)
    return grouped


def test_co_tenant_writers_all_succeed_in_order(database_url: str, workers: list[Worker]) -> None:
    appends = 10
    with Ledger.open(database_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
    answers = finish(start_writers(workers, database_url, sid, appends))

    assert len(answers) == PROCESSES * THREADS * appends
    bad = [a for a in answers if a["outcome"] != "applied"]
    assert not bad, bad[:5]
    assert all(a["sessionId"] == a["currentSessionId"] == sid for a in answers)
    positions = [a["position"] for a in answers]
    assert len(set(positions)) == len(positions), "two appends answered with one position"
    in_log_order = [a["w"] for a in sorted(answers, key=lambda a: a["position"])]
    switches = sum(1 for x, y in pairwise(in_log_order) if x != y)
    print(f"{switches} writer switches in {len(answers)} appends")
    # The writers really ran at once: one after the other would switch 31 times.
    assert switches > 2 * PROCESSES * THREADS

    with Ledger.open(database_url) as ledger:
        entries = ledger.transcript(KEY)
        assert len(entries) == len(answers), "an acknowledged append is missing"
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        chains: dict[str, list[Any]] = defaultdict(list)
        for entry in entries:
            chains[entry.content["writer"]].append(entry)
        assert len(chains) == PROCESSES * THREADS
        for name, chain in chains.items():
            # Each writer's entries appear in its own order, each linked to the one before.
            assert [e.content["seq"] for e in chain] == list(range(appends)), name
            assert [e.parent_id for e in chain] == [None] + [e.entry_id for e in chain[:-1]]
            assert [e.position for e in chain] == sorted(
                a["position"] for a in by_writer(answers)[name]
            )
        # The hash chain of the generation runs through every entry in log order.
        assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
        row = ledger.session(KEY)
        assert (row.session_id, row.entry_count) == (sid, len(entries))
        assert_replay_equals_live(ledger)


def test_a_concurrent_reset_is_a_takeover_not_an_error(
    database_url: str, workers: list[Worker]
) -> None:
    """Every writer still appending when the reset lands is told `archived` + the new id.

    Writers append (at most `most` times each) until two of their appends came back
    archived, so each of them is in flight across the reset however slowly it arrives.
    """
    # A bound, not a target: writers stop at their second archived answer. The reset
    # polls for the writer lock every millisecond (database._begin_immediate) while the
    # other processes hand it on at once, so it waits tens of milliseconds, a few
    # appends of each writer. With SQLite's own sleeping busy handler it waited up to
    # seconds, and writers ran past 300 appends before it landed.
    most = 300
    writers = PROCESSES * THREADS
    with Ledger.open(database_url) as ledger:
        old = ledger.resolve(KEY, at=T0).session.session_id
        start_writers(workers, database_url, old, most, "archived")
        # Reset once every writer has had a few appends in, while they all keep going.
        workers[0].wait_for(
            lambda: sum(w.count("w") for w in workers) >= 3 * writers, "the first appends"
        )
        asked = time.monotonic()
        reset = ledger.reset(KEY, expected_session_id=old, reason="reset")
        print(f"the reset waited {time.monotonic() - asked:.2f} s for the writers")
        new = reset.session_id
        answers = finish(workers)

        grouped = by_writer(answers)
        assert len(grouped) == writers
        for name, mine in grouped.items():
            outcomes = [a["outcome"] for a in mine]
            # Applied until the reset, archived after it: never rejected, never an error.
            flip = outcomes.index("archived") if "archived" in outcomes else len(outcomes)
            assert outcomes == ["applied"] * flip + ["archived"] * (len(outcomes) - flip), name
            assert len(outcomes) - flip == 2, f"{name} never saw the reset in {most} appends"
            for answer in mine[flip:]:
                assert (answer["sessionId"], answer["currentSessionId"]) == (old, new)
                assert answer["position"] > reset.session.position

        # Nothing lost: every append is in the archived generation, none in the new one.
        archived = ledger.transcript(KEY, session_id=old)
        assert len(archived) == len(answers)
        assert ledger.transcript(KEY) == []
        row = ledger.session(KEY)
        assert (row.session_id, row.entry_count, row.previous_session_id) == (new, 0, old)
        generation = ledger.generation(old)
        assert generation is not None
        assert generation.state == "archived"
        assert generation.late_events == 2 * writers
        assert_replay_equals_live(ledger)


def test_processes_opening_a_new_store_at_once_all_succeed(
    database_url: str, workers: list[Worker]
) -> None:
    """Several gateway processes starting together on a new store: one creates it, none fails."""
    for proc in range(PROCESSES):
        workers.append(Worker("open_worker", database_url, str(proc), stdin=True))
    for worker in workers:
        worker.wait_for(lambda w=worker: w.count("ready") == 1, "the worker to start")  # type: ignore[misc]
    for worker in workers:
        worker.send("go")
    for worker in workers:
        assert worker.finish() == 0, worker.stderr()
        errors = [line for line in worker.lines if "error" in line]
        assert not errors, f"{errors[0]['error']}\n{errors[0]['trace']}"
    opened = {line["sessionId"] for worker in workers for line in worker.lines if "opened" in line}
    assert len(opened) == 1, "each process must find the one session the first opened"
    with Ledger.open(database_url) as ledger:
        assert_replay_equals_live(ledger)
