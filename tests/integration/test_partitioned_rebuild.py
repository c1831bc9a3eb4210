"""A SQLite rebuild folded by worker processes, each a share of the keys
(infrastructure/maintenance/partition.py): replay = live afterwards over generated interleavings of
every kind of event, each event reported to the progress callback once, and a worker
that fails or dies fails the rebuild with the live rows untouched, the shadow empty and
no temporary files left. A key whose rows collide with another's (a log the write path
would refuse) is folded serially instead."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from sessionledger.domain.conversation import conversation_id
from sessionledger.domain.errors import LedgerError, StoreUnavailable
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.maintenance import partition
from sessionledger.infrastructure.maintenance import rebuild as online_rebuild
from sessionledger.projections.tables import SHADOW, TABLES
from tests.helpers import assert_replay_equals_live, reported

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def share(session_key: str, workers: int = 2) -> int:
    """The worker that folds this key's events (the aggregate id's last hex digit)."""
    return int(conversation_id(session_key).hex[-1], 16) % workers


event = reported


def interleave(ledger: Ledger, seed: int, keys: int = 16, steps: int = 400) -> None:
    """Random commands over `keys` keys: resolves, appends, runs started and ended,
    bindings, resets, deletes, then recover and prune over what is left."""
    rng = random.Random(seed)
    names = [f"agent:main:telegram:direct:{seed}-{i}" for i in range(keys)]
    current: dict[str, str] = {}
    running: dict[str, list[str]] = {}
    deleted: set[str] = set()
    at = T0
    for step in range(steps):
        at += timedelta(seconds=rng.randint(1, 90))
        key = rng.choice(names)
        if key in deleted:
            continue
        if key not in current or rng.random() < 0.05:
            current[key] = ledger.resolve(key, at=at).session.session_id
            running[key] = []
            continue
        sid = current[key]
        roll = rng.random()
        if roll < 0.45:
            batch = [
                event(
                    "transcript.appended",
                    key,
                    sid,
                    f"t{step}-{n}",
                    at,
                    entry={"id": f"m{step}-{n}", "role": "user", "content": "hi", "timestamp": at},
                )
                for n in range(rng.randint(1, 4))
            ]
            ledger.record(batch)
        elif roll < 0.6:
            run = f"run-{seed}-{step}"
            ledger.record(
                [event("run.started", key, sid, f"s{step}", at, runId=run, trigger="user")]
            )
            running[key].append(run)
        elif roll < 0.72 and running[key]:
            run = running[key].pop(rng.randrange(len(running[key])))
            ledger.record([event("run.ended", key, sid, f"e{step}", at, runId=run, outcome="done")])
        elif roll < 0.8:
            ledger.set_binding(key, "claude", f"cli-{step}", at=at)
        elif roll < 0.9:
            current[key] = ledger.reset(key, at=at).session.session_id
            running[key] = []
        elif roll < 0.93:
            ledger.delete(key, at=at)
            deleted.add(key)
        else:
            with contextlib.suppress(LedgerError):  # no binding to drop
                ledger.drop_binding(key, "claude", at=at)
    ledger.recover(timedelta(minutes=30), at=at + timedelta(hours=1))
    ledger.prune(timedelta(minutes=20), at=at + timedelta(hours=1))


def workers() -> list[int]:
    """This process's rebuild workers (their command line names the module)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == os.getpid() and b"sessionledger.infrastructure.maintenance.partition" in command:
            found.append(int(entry.name))
    return found


def rows(url: str, *tables: Any) -> dict[str, list[tuple[Any, ...]]]:
    path = make_url(url).database
    assert path is not None
    with sqlite3.connect(path) as connection:
        return {
            t.name: sorted(connection.execute(f"SELECT * FROM {t.name}").fetchall(), key=repr)
            for t in tables
        }


def leftovers(url: str) -> list[str]:
    directory = Path(make_url(url).database or "").parent
    return [p.name for p in directory.iterdir() if ".rebuild-" in p.name]


def rebuild(ledger: Ledger, workers: int = 2, **kwargs: Any) -> tuple[int, list[int]]:
    reported: list[int] = []
    kwargs.setdefault("on_progress", reported.append)
    position = online_rebuild.rebuild(ledger.store, workers=workers, partition_from=0, **kwargs)
    return position, reported


@pytest.mark.parametrize(
    ("seed", "workers", "page"), [(1, 2, partition.PAGE), (2, 2, 7), (3, 3, 5)]
)
def test_a_partitioned_rebuild_equals_live(
    sqlite_url: str, seed: int, workers: int, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partition, "PAGE", page)  # this process's events per transaction
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, seed)
        assert {share(f"agent:main:telegram:direct:{seed}-{i}", workers) for i in range(16)} == (
            set(range(workers))
        )
        before = rows(sqlite_url, *TABLES.projected)
        head = ledger.positions()[1]
        position, reported = rebuild(ledger, workers)
        assert position == head
        assert sum(reported) == head  # every event reported once, by whichever worker
        assert_replay_equals_live(ledger)
        assert rows(sqlite_url, *TABLES.projected) == before
        assert rows(sqlite_url, *SHADOW.projected, SHADOW.tracking) == {
            t.name: [] for t in (*SHADOW.projected, SHADOW.tracking)
        }
        assert leftovers(sqlite_url) == []
        # The live projection goes on from the swapped position.
        key = f"agent:main:telegram:direct:{seed}-extra"
        ledger.resolve(key, at=T0)
        position, now = ledger.positions()
        assert position == now > head
        assert_replay_equals_live(ledger)


@pytest.mark.parametrize("under_lock", [0, online_rebuild.CATCH_UP_UNDER_LOCK])
def test_events_recorded_during_the_fold_are_in_the_swapped_rows(
    sqlite_url: str, under_lock: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers keep going while the workers fold: their events (on keys of both shares,
    folded already and new) are folded into the workers' files by share before the swap
    (nothing left under the lock), or, when few, under the lock into the live tables."""
    monkeypatch.setattr(online_rebuild, "CATCH_UP_UNDER_LOCK", under_lock)
    monkeypatch.setattr(partition, "PAGE", 10)
    caught_up: list[int] = []
    catch_up = partition.Parts.catch_up

    def counted(parts: partition.Parts, target: int, on_progress: Any) -> None:
        caught_up.append(target - parts.position)
        catch_up(parts, target, on_progress)

    monkeypatch.setattr(partition.Parts, "catch_up", counted)
    keys = [f"agent:main:telegram:direct:meanwhile-{i}" for i in range(8)]
    assert {share(k) for k in keys} == {0, 1}
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, 8)
        sessions = {key: ledger.resolve(key, at=T0).session.session_id for key in keys}
        calls = 0
        reported: list[int] = []

        def write_meanwhile(count: int) -> None:
            nonlocal calls
            reported.append(count)
            calls += 1
            if calls > 4:  # the parent's first pages: long before the swap
                return
            ledger.resolve(f"agent:main:telegram:direct:new-{calls}", at=T0)
            ledger.record(
                [
                    event(
                        "transcript.appended",
                        key,
                        sid,
                        f"meanwhile-{calls}-{key}",
                        T0,
                        entry={
                            "id": f"w{calls}",
                            "role": "assistant",
                            "content": "ok",
                            "timestamp": T0,
                        },
                    )
                    for key, sid in sessions.items()
                ]
            )

        position, _ = rebuild(ledger, on_progress=write_meanwhile)
        head = ledger.positions()[1]
        assert calls > 4
        assert position == head
        assert sum(reported) == head
        assert bool(caught_up) == (under_lock == 0)
        assert_replay_equals_live(ledger)
        for key in keys:
            assert ledger.session(key).entry_count == 4


def test_a_second_rebuild_alongside_fails_the_first(sqlite_url: str) -> None:
    """One rebuild at a time: a second one started while the first folds removes the
    first's worker files; the first then fails instead of swapping, and the rows are
    the second's."""
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, 9)
        second: list[int] = []

        def start_another(_count: int) -> None:
            if not second:
                second.append(rebuild(ledger)[0])

        with pytest.raises(StoreUnavailable, match="unable to open database file"):
            rebuild(ledger, on_progress=start_another)
        assert second == [ledger.positions()[1]]
        assert_replay_equals_live(ledger)
        assert leftovers(sqlite_url) == []
        assert workers() == []


def test_a_worker_file_gone_before_the_merge_fails_the_rebuild(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    merge = partition.Parts.merge

    def remove_then_merge(parts: partition.Parts) -> bool:
        parts.files[1].main.unlink()
        return merge(parts)

    monkeypatch.setattr(partition.Parts, "merge", remove_then_merge)
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, 10)
        before = rows(sqlite_url, *TABLES.projected, TABLES.tracking)
        with pytest.raises(StoreUnavailable, match="rebuild files unavailable"):
            rebuild(ledger)
        assert_untouched(sqlite_url, before)
        assert workers() == []


def test_small_logs_and_one_worker_fold_in_this_process(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, 4, steps=60)
        head = ledger.positions()[1]
        reported: list[int] = []
        seen: list[int] = []

        def progress(count: int) -> None:
            reported.append(count)
            seen.extend(workers())

        for options in ({"workers": 1, "partition_from": 0}, {"workers": 2}):
            reported.clear()
            assert online_rebuild.rebuild(ledger.store, progress, **options) == head
            assert seen == []
            assert sum(reported) == head
            assert_replay_equals_live(ledger)


@pytest.mark.postgres
def test_postgresql_folds_in_this_process(postgres_url: str) -> None:
    with Ledger.open(postgres_url) as ledger:
        interleave(ledger, 7, steps=80)
        head = ledger.positions()[1]
        seen: list[int] = []
        position, _ = rebuild(ledger, on_progress=lambda _: seen.extend(workers()))
        assert position == head
        assert seen == []
        assert_replay_equals_live(ledger)


def corrupt_one_event_of(url: str, worker: int, workers: int) -> None:
    """A payload that no longer decodes, in a key of `worker`'s share."""
    digits = [d for d in "0123456789ABCDEF" if int(d, 16) % workers == worker]
    path = make_url(url).database
    assert path is not None
    with sqlite3.connect(path) as connection:
        marks = ",".join("?" * len(digits))
        (position,) = connection.execute(
            "SELECT max(id) FROM sessionledger_events "
            f"WHERE substr(hex(originator_id), 32, 1) IN ({marks})",
            digits,
        ).fetchone()
        assert position is not None
        connection.execute(
            "UPDATE sessionledger_events SET state = ? WHERE id = ?", (b"{not json", position)
        )


def assert_untouched(url: str, before: dict[str, list[tuple[Any, ...]]]) -> None:
    assert rows(url, *TABLES.projected, TABLES.tracking) == before
    assert rows(url, *SHADOW.projected, SHADOW.tracking) == {
        t.name: [] for t in (*SHADOW.projected, SHADOW.tracking)
    }
    assert leftovers(url) == []


@pytest.mark.parametrize("worker", [0, 1])
def test_a_worker_that_fails_fails_the_rebuild(sqlite_url: str, worker: int) -> None:
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, 5)
        corrupt_one_event_of(sqlite_url, worker, 2)
        before = rows(sqlite_url, *TABLES.projected, TABLES.tracking)
        with pytest.raises(Exception) as failed:
            rebuild(ledger)
        if worker == 1:
            assert isinstance(failed.value, partition.WorkerFailed)
            assert "rebuild worker 1 failed" in str(failed.value)
        assert_untouched(sqlite_url, before)
        assert workers() == []


def test_a_worker_that_dies_fails_the_rebuild(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, 6)
        before = rows(sqlite_url, *TABLES.projected, TABLES.tracking)
        # The parent reports after each of its pages of 10 events; the spawned worker
        # (its own PAGE) is still starting its interpreter when the first one comes.
        monkeypatch.setattr(partition, "PAGE", 10)
        killed: list[int] = []

        def kill_the_worker(_count: int) -> None:
            for pid in workers():
                if pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

        with pytest.raises(partition.WorkerFailed, match="exited"):
            rebuild(ledger, on_progress=kill_the_worker)
        assert len(killed) == 1
        assert_untouched(sqlite_url, before)
        assert workers() == []


def test_rows_shared_by_two_keys_are_folded_serially(sqlite_url: str) -> None:
    """A run id started in two keys of different shares (the write path refuses a runId
    another key uses: its identifier and its row are removed behind the store's back
    first). The partitioned
    fold's copy finds the collision and the rebuild folds serially, as the live
    projection did."""
    keys = [f"agent:main:telegram:direct:c{i}" for i in range(40)]
    a = next(k for k in keys if share(k) == 0)
    b = next(k for k in keys if share(k) == 1)
    with Ledger.open(sqlite_url) as ledger:
        sid_a = ledger.resolve(a, at=T0).session.session_id
        sid_b = ledger.resolve(b, at=T0).session.session_id
        ledger.record([event("run.started", a, sid_a, "a-s", T0, runId="shared", trigger="user")])
    with sqlite3.connect(make_url(sqlite_url).database or "") as connection:
        connection.execute("DELETE FROM ledger_runs WHERE run_id = 'shared'")
        connection.execute("DELETE FROM sessionledger_identifiers WHERE identifier = 'shared'")
    with Ledger.open(sqlite_url) as ledger:
        (result,) = ledger.record(
            [event("run.started", b, sid_b, "b-s", T0, runId="shared", trigger="user")]
        )
        assert result.outcome == "applied"
        head = ledger.positions()[1]
        position, reported = rebuild(ledger)
        assert position == head
        assert sum(reported) == head  # the serial fold's events were reported already
        assert_replay_equals_live(ledger)
        assert rows(sqlite_url, TABLES.runs)["ledger_runs"][0][1] == b
        assert leftovers(sqlite_url) == []


@pytest.mark.parametrize(
    ("table", "group"),
    [
        (TABLES.runs.name, "main"),  # merged by one thread: share 1's file into share 0's
        (TABLES.receipts.name, "side"),  # by the other: share 0's file into share 1's
    ],
)
def test_a_collision_in_either_merge_thread_folds_serially(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, table: str, group: str
) -> None:
    """Each thread of the merge reports a primary-key collision in its group of tables:
    a row of the file it merges into is copied into a file it merges from, the merge
    answers False and the rebuild folds serially, equal to live."""
    merge = partition.Parts.merge
    merged: list[bool] = []

    def collide_then_merge(parts: partition.Parts) -> bool:
        kept_main, kept_side = partition.kept_shares(len(parts.files))
        kept = kept_main if group == "main" else kept_side
        target = getattr(parts.files[kept], group)
        duplicate = getattr(parts.files[1 - kept], group)
        with sqlite3.connect(duplicate) as connection:
            connection.execute("ATTACH DATABASE ? AS kept", (str(target),))
            inserted = connection.execute(
                f'INSERT INTO main."{table}" SELECT * FROM kept."{table}" LIMIT 1'
            ).rowcount
            assert inserted == 1
        merged.append(merge(parts))
        return merged[-1]

    monkeypatch.setattr(partition.Parts, "merge", collide_then_merge)
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, 11)
        head = ledger.positions()[1]
        position, _ = rebuild(ledger)
        assert merged == [False]
        assert position == head
        assert_replay_equals_live(ledger)
        assert leftovers(sqlite_url) == []


def test_a_killed_rebuilds_directory_is_removed_by_the_next_one(sqlite_url: str) -> None:
    """A rebuild whose process was killed leaves its directory of worker files beside
    the store; the next rebuild of that store removes it, and leaves another store's."""
    store = Path(make_url(sqlite_url).database or "")
    stale = store.parent / f".{store.name}.rebuild-killed"
    neighbour = store.parent / f".other-{store.name}.rebuild-running"
    for directory in (stale, neighbour):
        directory.mkdir()
        (directory / "part-1.db").write_bytes(b"half a fold")
    with Ledger.open(sqlite_url) as ledger:
        interleave(ledger, 7, keys=4, steps=40)
        rebuild(ledger)
        assert_replay_equals_live(ledger)
    assert not stale.exists()
    assert leftovers(sqlite_url) == [neighbour.name]
