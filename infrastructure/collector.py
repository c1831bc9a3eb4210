"""The cyclic garbage collector, at ease while a long fold, replay or large batch runs.

A rebuild, verify, audit or large batch allocates hundreds of thousands of objects
(decoded events, rows, parameters, report lines) that reference counting frees: they
form no cycles. The cyclic collector still scanned the young ones every 700
allocations, the ones kept again and again, and in its full collections every object
the process had before as well. Meanwhile, the objects that existed before are frozen
(`gc.freeze`: left out of collections until unfrozen), and a young collection waits
for 50,000 more tracked objects than were freed instead of 700. Both are process-wide,
so they are undone when the last such run in the process ends; objects someone else
froze before (a forking server's trick) are left to them.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

YOUNG_THRESHOLD = 50_000
# Facts in one batch from which the cyclic collector is put at ease while they are
# validated, decided, recorded and folded (`Ledger.record`, one window; a group commit's
# batches together, infrastructure/batch.py): 1,000 facts allocate enough surviving objects for
# ~33 young and ~3 middle collections and, every few batches, a full one over the whole
# process, about a tenth of ingest's instructions. A single command allocates too few
# for any (and the switch would cost it a few µs).
AT_EASE_FROM = 100
_running = 0  # runs with the collector at ease, in this process
_lock = threading.Lock()
_restore: tuple[tuple[int, int, int], bool] = ((700, 10, 10), False)


@contextmanager
def collector_at_ease() -> Iterator[None]:
    global _running, _restore
    with _lock:
        if _running == 0:
            threshold = gc.get_threshold()
            freeze = gc.get_freeze_count() == 0
            _restore = (threshold, freeze)
            if freeze:
                gc.freeze()
            gc.set_threshold(max(threshold[0], YOUNG_THRESHOLD), *threshold[1:])
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0:
                threshold, freeze = _restore
                gc.set_threshold(*threshold)
                if freeze:
                    gc.unfreeze()


def at_ease_for(facts: int, work: Callable[[], T]) -> T:
    """`work()` for a batch of `facts` facts: with the collector at ease from
    AT_EASE_FROM facts on, as it is (no context manager at all) below."""
    if facts >= AT_EASE_FROM:
        with collector_at_ease():
            return work()
    return work()
