"""Group commit: concurrent callers share one write transaction, and its durable commit.

Writers are serialised (infrastructure.database), so under concurrent load every caller
waits for the writer and then pays a whole transaction of its own: BEGIN, the catch-up
checks, COMMIT with its fsync. A `CommitQueue` lets the caller that gets the writer
decide every batch queued behind it in one transaction instead:

- a caller that finds the writer free starts at once (no timer, no waiting to fill a
  group); batches arriving meanwhile queue up, and the transaction takes them in before
  it commits (`join`), so they share its commit instead of waiting for a commit of
  their own: under a steady load of single events the lone first caller's commit had
  carried one event and the next group the rest, two fsyncs where one does;
- a group holds at most `limit` items (e.g. events), so no transaction grows past what
  one caller could already ask for; one oversized batch still runs, alone;
- every caller is answered only after its group's transaction returned, i.e. after the
  commit is durable; each gets its own answer, or its own error;
- if the group's transaction fails, each batch is run again alone so one bad batch never
  fails the others; errors in `shared_faults` (the store itself is locked or gone) reach
  every caller of the group as they are, without retrying each batch one by one.

The caller that leads keeps leading until its own batch is answered, then hands the
lead to the oldest waiting caller, so batches are decided in the order they arrived.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

B = TypeVar("B")
_UNSET = object()
R = TypeVar("R")


class _Ticket(Generic[B, R]):
    """One caller's batch, its answer, and the signal that wakes the caller: a lock
    taken at creation and released once, either with the answer or to make it lead."""

    __slots__ = ("_wake", "batch", "done", "error", "result", "size")

    def __init__(self, batch: B, size: int) -> None:
        self.batch = batch
        self.size = size
        self.done = False
        self.result: R | object = _UNSET
        self.error: BaseException | None = None
        self._wake = threading.Lock()
        self._wake.acquire()

    def wait(self) -> None:
        self._wake.acquire()

    def wake(self) -> None:
        self._wake.release()

    def answer(self) -> R:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


Join = Callable[[], Sequence[B]]


class CommitQueue(Generic[B, R]):
    """Runs `together(batches, join)` for the batches queued while the writer was busy.

    `together` must answer each batch exactly as `alone` would have if the batches had
    been run one after the other, in the order given, and commit before it returns.
    Before it commits it calls `join()` until that returns nothing: the batches queued
    meanwhile (within the group's limit), to decide after the others in the same
    transaction and answer in the same order. If `together` runs its work again (a
    transient conflict), it decides everything joined so far again.
    """

    def __init__(
        self,
        together: Callable[[Sequence[B], Join[B]], Sequence[R]],
        alone: Callable[[B], R],
        *,
        size: Callable[[B], int],
        limit: int,
        shared_faults: tuple[type[Exception], ...] = (),
    ) -> None:
        self._together = together
        self._alone = alone
        self._size = size
        self._limit = limit
        self._shared_faults = shared_faults
        self._mutex = threading.Lock()
        # The batches waiting for the writer, oldest first (guarded by the mutex).
        self.queue: deque[_Ticket[B, R]] = deque()
        self._leading = False  # someone is deciding groups (the writer is taken)

    def submit(self, batch: B) -> R:
        """Decide `batch`, alone or with others; returns (or raises) its own answer."""
        ticket: _Ticket[B, R] = _Ticket(batch, self._size(batch))
        with self._mutex:
            # Nobody leads, so nobody is queued either (a queue always has a leader).
            lone = not self._leading
            self._leading = True
            if not lone:
                self.queue.append(ticket)
        if lone:
            # The writer is free: lead at once, a group of one that others may join.
            try:
                self._decide([ticket], ticket)
            finally:
                self._hand_over()
            return ticket.answer()
        ticket.wait()  # woken with the answer, or to take over the lead
        if not ticket.done:
            self._lead(ticket)
        return ticket.answer()

    def _lead(self, own: _Ticket[B, R]) -> None:
        try:
            while not own.done:
                self._decide(self._take(), own)
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """Pass the lead to the oldest waiting caller, if any."""
        with self._mutex:
            successor = self.queue[0] if self.queue else None
            self._leading = successor is not None
        if successor is not None:
            successor.wake()

    def _take(self, total: int = 0) -> list[_Ticket[B, R]]:
        """The oldest queued batches that fit in `limit` beside `total` already taken
        (with nothing taken yet, at least one batch, however large)."""
        group: list[_Ticket[B, R]] = []
        with self._mutex:
            queue = self.queue
            while queue and (not (group or total) or total + queue[0].size <= self._limit):
                ticket = queue.popleft()
                total += ticket.size
                group.append(ticket)
        return group

    def _decide(self, group: list[_Ticket[B, R]], leader: _Ticket[B, R]) -> None:
        total = sum(t.size for t in group)

        def join() -> list[B]:
            nonlocal total
            if not self.queue:
                # Read without the mutex: a batch queued just after is led by its own
                # caller once this group is done (`_hand_over` looks under the mutex).
                return []
            joined = self._take(total)
            group.extend(joined)  # answered, or run alone, with the rest of the group
            total += sum(t.size for t in joined)
            return [t.batch for t in joined]

        try:
            try:
                results = self._together([t.batch for t in group], join)
            except self._shared_faults as error:
                for ticket in group:
                    ticket.error = error
            except Exception as error:
                # Something in the group failed it: run each batch on its own, so the
                # failure reaches only the batch(es) that cause it.
                if len(group) == 1:
                    group[0].error = error  # it failed alone already
                else:
                    for ticket in group:
                        self._run_alone(ticket)
            else:
                if len(results) != len(group):
                    raise AssertionError(f"{len(results)} answers for {len(group)} batches")
                for ticket, result in zip(group, results, strict=True):
                    ticket.result = result
        except BaseException as error:  # nobody may be left waiting for an answer
            for ticket in group:
                if ticket.result is _UNSET and ticket.error is None:
                    ticket.error = error
            raise
        finally:
            for ticket in group:
                ticket.done = True
                if ticket is not leader:  # the leader is not waiting
                    ticket.wake()

    def _run_alone(self, ticket: _Ticket[B, R]) -> None:
        try:
            ticket.result = self._alone(ticket.batch)
        except Exception as error:
            ticket.error = error


__all__ = ["CommitQueue"]
