"""CPU per event of the write path and of a rebuild, optionally with a pyinstrument tree:
the measurements docs/performance.md quotes as "CPU time" (the benchmark's table reports
wall time against raw baselines instead).

    .venv/bin/python -m bench.profile single           # 2,000 single-event commands
    .venv/bin/python -m bench.profile batch            # 5 batches of 1,000 events
    .venv/bin/python -m bench.profile rebuild          # the quick profile's 100,000-event store
    .venv/bin/python -m bench.profile batch --tree     # + where the time went (pyinstrument)
    .venv/bin/python -m bench.profile single --unprojected  # the ceiling without row writes

`single` and `batch` also time raw sqlite3 (bench.baseline) in the same directory, for
the ratio. `--unprojected` is a what-if, never a mode of the store: the command still
decides, logs its events and folds them in memory, and the tracking position still
moves, but no session, generation, run, entry or receipt row is written. It is the most
a design that commits the event alone and projects later (a projector worker following the log)
could gain on the command path; docs/performance.md "What remains" quotes it.

Run it under `valgrind --tool=callgrind` for instruction counts when the machine is busy.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sessionledger.projections.projector as projector_module
from bench.baseline import SqliteBaseline
from bench.facts import Chain
from bench.fixtures import sessions_store
from sessionledger.infrastructure.ledger import Ledger

KEYS = 50


def writes(ledger: Ledger, mode: str) -> tuple[Callable[[int], None], int, int]:
    """The workload, its rounds and the events each round records."""
    now = datetime.now(UTC)
    chains = []
    for i in range(KEYS):
        key = f"agent:a{i % 3}:slack:direct:u{i}"
        chains.append(Chain(key, ledger.resolve(key, at=now).session.session_id, now))

    def single(rounds: int) -> None:
        for i in range(rounds):
            ledger.record([chains[i % 16].append()])

    def batch(rounds: int) -> None:
        for _ in range(rounds):
            ledger.record([chains[j % KEYS].append() for j in range(1000)])

    return (single, 2000, 1) if mode == "single" else (batch, 5, 1000)


def measure(work: Callable[[], Any], tree: bool) -> tuple[float, float]:
    """Wall and CPU seconds of `work`, printing pyinstrument's tree if asked."""
    profiler: Any = None
    if tree:
        from pyinstrument import Profiler  # a dev tool: pip install pyinstrument

        profiler = Profiler(interval=0.0005)
        profiler.start()
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))
    return wall, cpu


def unproject() -> None:
    """Leave out every read-model row write (see the module's docstring)."""

    def skip(*_arguments: Any) -> None:
        return None

    projector = projector_module.Projector
    for owner, name, stand_in in (
        (projector, "_insert", staticmethod(skip)),
        (projector, "_delete", staticmethod(skip)),
        (projector_module, "_update_changed", skip),
    ):
        setattr(owner, name, stand_in)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("mode", choices=["single", "batch", "rebuild"])
    parser.add_argument("--tree", action="store_true", help="print pyinstrument's tree")
    parser.add_argument(
        "--unprojected", action="store_true", help="what-if: write no read-model rows"
    )
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="sessionledger-profile-"))
    raw = ""
    try:
        if args.mode == "rebuild":
            store = sessions_store(10_000)
            shutil.copy(store.path, directory / "ledger.db")
            events = store.events
            with Ledger.open(f"sqlite:///{directory / 'ledger.db'}") as ledger:
                wall, cpu = measure(ledger.rebuild, args.tree)
        else:
            with Ledger.open(f"sqlite:///{directory / 'ledger.db'}") as ledger:
                work, rounds, size = writes(ledger, args.mode)
                if args.unprojected:  # once the keys are open: resolve reads their rows
                    unproject()
                work(max(1, rounds // 10))  # warm: caches, compiled statements
                wall, cpu = measure(lambda: work(rounds), args.tree)
                events = rounds * size
            baseline = SqliteBaseline(directory)
            try:
                if size == 1:
                    base = baseline.append_rate(rounds)
                else:
                    base = baseline.batch_rate(size, rounds)
            finally:
                baseline.close()
            raw = f"; raw sqlite3 {base:,.0f} events/s, ratio {events / wall / base:.2f}x"
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    # A rebuild's worker process spends CPU this process's clock does not see.
    print(
        f"{args.mode}: {events / wall:,.0f} events/s wall, "
        f"{cpu / events * 1e6:.0f} µs CPU per event in this process{raw}"
        + (" (unprojected: no read-model rows written)" if args.unprojected else "")
    )


if __name__ == "__main__":
    main()
