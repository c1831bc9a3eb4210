"""Group commit (infrastructure.group_commit): concurrent record calls share a transaction.

Real threads throughout. A test that needs callers queued behind a busy writer holds the
writer itself, waits until the callers are queued (a condition on the queue, never a
sleep), then lets the writer go.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import sqlalchemy.exc

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.infrastructure import ledger as ledger_module
from sessionledger.infrastructure.database import Database
from sessionledger.infrastructure.group_commit import CommitQueue
from sessionledger.infrastructure.ledger import Ledger, RecordResult
from tests.helpers import assert_replay_equals_live
from tests.integration.test_api import entry, open_key

WAIT = 60.0  # seconds: a safety net for a broken queue, never a way to wait for state


class Watched(deque[Any]):
    """The queue of a CommitQueue, observable: tests wait until callers have queued."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()
        self.arrivals: list[Any] = []

    def append(self, item: Any) -> None:
        with self.changed:
            super().append(item)
            self.arrivals.append(item)
            self.changed.notify_all()

    def wait_for_arrivals(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.arrivals) >= count, WAIT)


def watch(queue: CommitQueue[Any, Any]) -> Watched:
    watched = Watched()
    queue.queue = watched
    return watched


class Caller(threading.Thread):
    """Submits one batch and keeps its answer or error."""

    def __init__(self, submit: Callable[[Any], Any], batch: Any) -> None:
        super().__init__(daemon=True)
        self.submit = submit
        self.batch = batch
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.submit(self.batch)
        except BaseException as e:
            self.error = e

    def answer(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive()
        return self.result


# -- the queue, with stand-in work ----------------------------------------------------------


class Work:
    """`together` and `alone` for a CommitQueue of string batches; the first call waits
    at a gate the test opens, so the callers started meanwhile queue behind it. A
    transaction (`groups` keeps each one's batches) takes in what `join` brings before
    it ends, as the ledger's does."""

    def __init__(self, fails: Callable[[list[str]], BaseException | None] = lambda _: None):
        self.fails = fails
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.groups: list[list[list[str]]] = []

    def _first(self) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(WAIT)

    def together(
        self, batches: Sequence[list[str]], join: Callable[[], Sequence[list[str]]]
    ) -> list[str]:
        self._first()
        decided: list[list[str]] = []
        self.groups.append(decided)
        while batches:
            for batch in batches:
                decided.append(batch)
                if (error := self.fails(batch)) is not None:
                    raise error
            batches = join()
        return ["+".join(batch) for batch in decided]

    def alone(self, batch: list[str]) -> str:
        self._first()
        self.groups.append([batch])
        if (error := self.fails(batch)) is not None:
            raise error
        return "+".join(batch)

    def queue(self, limit: int = 1000) -> tuple[CommitQueue[list[str], str], Watched]:
        queue: CommitQueue[list[str], str] = CommitQueue(
            self.together,
            self.alone,
            size=len,
            limit=limit,
            shared_faults=(StoreUnavailable,),
        )
        return queue, watch(queue)


def hold_the_writer(
    work: Work, queue: CommitQueue[list[str], str], watched: Watched, batches: list[list[str]]
) -> tuple[Caller, list[Caller]]:
    """A lead caller takes the writer and waits at the gate; the others queue behind it."""
    lead = Caller(queue.submit, ["lead"])
    lead.start()
    assert work.entered.wait(WAIT)
    callers = [Caller(queue.submit, batch) for batch in batches]
    for caller in callers:
        caller.start()
    watched.wait_for_arrivals(len(callers))  # the lead found the writer free: it never queued
    work.gate.set()
    lead.join(WAIT)
    return lead, callers


def test_a_lone_caller_commits_at_once_by_itself() -> None:
    work = Work()
    work.gate.set()
    queue, _ = work.queue()
    assert queue.submit(["a", "b"]) == "a+b"
    assert work.groups == [[["a", "b"]]]


def test_callers_queued_behind_the_writer_join_its_transaction_in_arrival_order() -> None:
    work = Work()
    queue, watched = work.queue()
    lead, callers = hold_the_writer(work, queue, watched, [[f"b{n}"] for n in range(6)])
    assert lead.answer() == "lead"
    for caller in callers:
        assert caller.answer() == caller.batch[0]
    arrived = [ticket.batch for ticket in watched.arrivals]
    assert work.groups == [[["lead"], *arrived]]  # one transaction, one commit


def test_a_group_holds_at_most_the_limit() -> None:
    work = Work()
    queue, watched = work.queue(limit=4)
    lead, callers = hold_the_writer(
        work, queue, watched, [["x"] * 3, ["y"] * 2, ["z"] * 2, ["w"] * 5]
    )
    assert lead.answer() == "lead"
    for caller in callers:
        assert caller.answer() == "+".join(caller.batch)
    groups = work.groups
    assert groups[0] == [["lead"], ["x"] * 3]  # "y" would take it past the limit: not joined
    assert sorted(b[0] for group in groups for b in group) == ["lead", "w", "x", "y", "z"]
    for group in groups:
        assert len(group) == 1 or sum(map(len, group)) <= 4  # 5 "w" can only run alone


def test_one_failing_batch_fails_only_its_own_caller() -> None:
    work = Work(lambda batch: ValueError("bad batch") if batch == ["bad"] else None)
    queue, watched = work.queue()
    lead, callers = hold_the_writer(work, queue, watched, [["b0"], ["bad"], ["b1"], ["b2"]])
    assert lead.answer() == "lead"
    for caller in callers:
        caller.join(WAIT)
        if caller.batch == ["bad"]:
            assert isinstance(caller.error, ValueError)
        else:
            assert caller.error is None
            assert caller.result == caller.batch[0]
    # the lead's transaction failed once "bad" joined it, then every batch, the lead's
    # too, was decided alone
    assert work.groups[0] == [["lead"], ["b0"], ["bad"]]
    assert sorted(g[0][0] for g in work.groups[1:]) == ["b0", "b1", "b2", "bad", "lead"]
    assert all(len(group) == 1 for group in work.groups[1:])


def test_a_store_fault_reaches_every_caller_of_the_group_without_retrying_each() -> None:
    work = Work(lambda batch: None if batch == ["lead"] else StoreUnavailable("database locked"))
    queue, watched = work.queue()
    lead, callers = hold_the_writer(work, queue, watched, [["b0"], ["b1"], ["b2"]])
    # The whole transaction failed, the lead's batch with it.
    for caller in [lead, *callers]:
        caller.join(WAIT)
        assert isinstance(caller.error, StoreUnavailable)
    assert len(work.groups) == 1  # no batch ran again alone


def test_the_lead_passes_on_and_every_caller_is_answered() -> None:
    work = Work()
    work.gate.set()
    queue, _ = work.queue(limit=3)
    callers = [Caller(queue.submit, [f"c{n}"] * (1 + n % 3)) for n in range(40)]
    for caller in callers:
        caller.start()
    for caller in callers:
        assert caller.answer() == "+".join(caller.batch)
    decided = [batch for group in work.groups for batch in group]
    assert len(decided) == len(callers)


# -- the ledger: SQLite and PostgreSQL -------------------------------------------------------


def count_writes(ledger: Ledger) -> tuple[list[int], threading.Event]:
    """Counts the ledger's write transactions; the event is set when the first begins."""
    writes: list[int] = []
    entered = threading.Event()
    real = ledger.store.database.write

    def write(work: Any, **options: Any) -> Any:
        writes.append(len(writes))
        entered.set()
        return real(work, **options)

    ledger.store.database.write = write  # type: ignore[method-assign]
    return writes, entered


def test_records_queued_behind_the_writer_commit_once_and_each_gets_its_own_answer(
    ledger: Ledger,
) -> None:
    sid = open_key(ledger)
    first = entry(sid, "m0")
    retried = entry(sid, "m1", parent="m0")
    writes, entered = count_writes(ledger)
    watched = watch(ledger.commits)
    callers: list[Caller] = []

    def busy_writer(_: Any) -> Caller:  # the writer is busy: callers queue
        lead = Caller(ledger.record, [first])
        lead.start()
        assert entered.wait(WAIT)
        batches = [
            [retried],
            [entry(sid, "m2", parent="m0"), entry(sid, "m3", parent="m2")],
            [retried],  # a retry of a batch in the same group
            [first],  # a retry of what the lead recorded
            [entry(sid, "m4", parent="nope")],  # refused by the domain
        ]
        callers.extend(Caller(ledger.record, batch) for batch in batches)
        for caller in callers:
            caller.start()
        watched.wait_for_arrivals(len(callers))  # the lead runs without queueing
        return lead

    # Not through count_writes' wrapper: this transaction only holds the writer.
    lead = Database.write(ledger.store.database, busy_writer)
    (lead_result,) = lead.answer()
    answers = [caller.answer() for caller in callers]
    assert all(caller.error is None for caller in callers)
    assert len(writes) == 1  # everything queued behind the lead joined its transaction

    assert lead_result.outcome == "applied"
    (lead_retry,) = answers[3]
    assert lead_retry == RecordResult(
        first["eventId"],
        "applied",
        lead_result.position,
        sid,
        sid,
        f"duplicate eventId: already recorded at position {lead_result.position}",
    )
    (refused,) = answers[4]
    assert refused.outcome == "rejected" and refused.reason is not None
    assert [r.outcome for r in answers[1]] == ["applied", "applied"]
    # The fact two callers of the group sent: whichever queued first recorded it, the
    # other is answered like any retry.
    (one,), (other,) = answers[0], answers[2]
    recorded, again = (one, other) if one.reason is None else (other, one)
    assert recorded.outcome == "applied" and recorded.reason is None
    assert again == RecordResult(
        recorded.event_id,
        "applied",
        recorded.position,
        sid,
        sid,
        f"duplicate eventId: already recorded at position {recorded.position}",
    )
    # Positions follow the queue: a batch's events come after those of the batches before.
    new = {r.event_id: r.position for a in answers for r in a if r.position and not r.reason}
    arrived = [f.event_id for ticket in watched.arrivals for f in ticket.batch]
    in_queue_order = [new[e] for e in dict.fromkeys(arrived) if e in new]
    assert in_queue_order == sorted(in_queue_order)
    assert len(in_queue_order) == 3 and in_queue_order[0] > (lead_result.position or 0)
    assert_replay_equals_live(ledger)


def test_a_retried_transaction_decides_the_batches_that_joined_it_again(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conflict (IntegrityError: the write path decides again) after batches joined
    the lead's transaction: the retry decides the lead's and the joined batches again,
    so each is recorded once and answered."""
    sid = open_key(ledger)
    logged = len(ledger.log())
    watched = watch(ledger.commits)
    real = ledger_module.record_batches
    calls: list[list[str]] = []

    def conflicting(uow: Any, batches: Sequence[Sequence[Any]]) -> Any:
        calls.append([fact.event_id for batch in batches for fact in batch])
        if len(calls) == 1:
            watched.wait_for_arrivals(3)  # inside the lead's transaction: the others queue
        if len(calls) == 2:
            raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("a concurrent write"))
        return real(uow, batches)

    monkeypatch.setattr(ledger_module, "record_batches", conflicting)
    lead = Caller(ledger.record, [entry(sid, "m0")])
    lead.start()
    callers = [Caller(ledger.record, [entry(sid, f"m{n}", parent="m0")]) for n in (1, 2, 3)]
    for caller in callers:
        caller.start()
    answers = [c.answer() for c in [lead, *callers]]
    assert all(c.error is None for c in [lead, *callers])
    lead_id = answers[0][0].event_id
    joined = [f"{a[0].event_id}" for a in answers[1:]]
    assert calls[0] == [lead_id]
    assert sorted(calls[1]) == sorted(joined)
    assert calls[2][0] == lead_id and sorted(calls[2][1:]) == sorted(joined)  # all again
    assert [r.outcome for a in answers for r in a] == ["applied"] * 4
    assert len({r.position for a in answers for r in a}) == 4
    assert len(ledger.log()) == logged + 4  # each entry once
    assert_replay_equals_live(ledger)


@pytest.mark.slow
def test_many_threads_recording_at_once_all_land_in_order(ledger: Ledger) -> None:
    threads, appends = 12, 15
    keys = [f"agent:main:telegram:direct:{n}" for n in range(4)]
    sids = {key: open_key(ledger, key) for key in keys}
    start = threading.Barrier(threads)

    def append_all(n: int) -> list[list[RecordResult]]:
        key = keys[n % len(keys)]
        start.wait(WAIT)
        return [
            ledger.record(
                [entry(sids[key], f"t{n}-{i}", key=key, writer="runner", content=f"{n}/{i}")]
            )
            for i in range(appends)
        ]

    callers = [Caller(append_all, n) for n in range(threads)]
    for caller in callers:
        caller.start()
    for caller in callers:
        for (result,) in caller.answer():
            assert result.outcome == "applied"
    for n, key in enumerate(keys):
        ids = [e.entry_id for e in ledger.transcript(key)]
        for writer in range(n, threads, len(keys)):
            mine = [i for i in ids if i.startswith(f"t{writer}-")]
            assert mine == [f"t{writer}-{i}" for i in range(appends)]
    assert_replay_equals_live(ledger)
