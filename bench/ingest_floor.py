"""The floor of batched ingest on the ledger's own schema: the same work, by hand.

    .venv/bin/python -m bench.ingest_floor [ROUNDS]

Two copies of one fresh store (50 keys resolved) take the same kind of 1,000-event
transcript batches, round after round, alternating:

- **ledger**: `Ledger.record(batch)`, as the ingest scenario runs it;
- **by hand**: the same batch validated by the ledger's own `parse_batch`, each fact's
  entry digest and hash-chain link computed by the domain's own functions, the event's
  JSON, the entry and receipt rows, the generations' and the tracking row's updates
  written in one `BEGIN IMMEDIATE` ... `COMMIT` on raw sqlite3 (WAL, synchronous=FULL,
  checkpoints on the ledger's own Checkpointer thread), one result per fact. No
  aggregate, no domain event objects, no fold, mapper, row objects or unit of work: it
  knows that every fact is an append to its key's current generation.

`Ledger.verify` then checks the hand-written store (each generation's hash chain from
the log, and every read-model row against a fresh fold of the log), so the floor has
written what the ledger writes. What is left between the two is the price of the
architecture: the layers a transcript append passes through. See docs/performance.md
"The ingest floor".
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

from bench.baseline import sqlite_connect
from bench.facts import Chain
from sessionledger.domain.conversation import conversation_id
from sessionledger.domain.events import TranscriptAppendedFact, chain_hash, json_moment
from sessionledger.infrastructure.batch import RecordResult
from sessionledger.infrastructure.checkpointer import BACKSTOP_PAGES, Checkpointer
from sessionledger.infrastructure.jsoncodec import dumps, dumps_sqlite
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.validation import parse_batch
from sessionledger.projections.tables import sqlite_text  # the ledger's text of a UTC moment

KEYS = 50
BATCH = 1000
BATCHES_A_ROUND = 4
TOPIC = "sessionledger.domain.events:TranscriptAppended"


class _Generation:
    """What the hand-written path keeps of a key's current generation."""

    __slots__ = ("entries", "head", "originator", "position", "resumable", "seq", "version")

    def __init__(self, originator: bytes, version: int, head: str, seq: int) -> None:
        self.originator = originator
        self.version = version
        self.head = head
        self.seq = seq
        self.resumable = False
        self.position = 0  # of the last event folded into it
        self.entries: dict[str, str] = {}


class HandWritten:
    """Transcript appends recorded straight into a store's tables."""

    def __init__(self, path: Path) -> None:
        self.checkpointer = Checkpointer(str(path))
        self.db = sqlite_connect(path)  # WAL, synchronous=FULL, as the ledger's
        self.db.execute("PRAGMA busy_timeout = 5000")
        self.db.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
        self.generations: dict[str, _Generation] = {}
        rows = self.db.execute(
            "SELECT session_id, session_key, head_hash, entry_count FROM ledger_generations"
        )
        for session_id, key, head, seq in rows.fetchall():
            originator = conversation_id(key).bytes
            ((version,),) = self.db.execute(
                "SELECT max(originator_version) FROM sessionledger_events WHERE originator_id = ?",
                (originator,),
            ).fetchall()
            self.generations[session_id] = _Generation(originator, version, head, seq)
        ((self.position,),) = self.db.execute(
            "SELECT notification_id FROM sessionledger_tracking"
        ).fetchall()

    def close(self) -> None:
        self.checkpointer.close()
        self.db.close()

    def record(self, items: list[dict[str, Any]]) -> list[RecordResult]:
        facts = parse_batch(items)
        moment = datetime.now(UTC)
        moment_json = json_moment(moment)
        moment_text = sqlite_text(moment)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            ids = [f.event_id for f in facts]
            marks = ",".join("?" * len(ids))
            known = db.execute(
                f"SELECT event_id FROM ledger_receipts WHERE event_id IN ({marks})", ids
            ).fetchall()
            if known:
                raise AssertionError("the floor records new eventIds only")
            events, entries, receipts, results = [], [], [], []
            touched: dict[str, _Generation] = {}
            position = self.position
            for fact in facts:
                assert isinstance(fact, TranscriptAppendedFact)
                generation = self.generations[fact.session_id]
                entry = fact.entry
                digest = fact.entry_digest()
                if entry.id in generation.entries or (
                    entry.parent_id is not None and entry.parent_id not in generation.entries
                ):
                    raise AssertionError("the floor records well-formed chains only")
                link = chain_hash(generation.head, digest)
                position += 1
                generation.version += 1
                generation.seq += 1
                generation.entries[entry.id] = digest[:32]
                state = {
                    **fact.dumped(),
                    "timestamp": moment_json,
                    "seq": generation.seq,
                    "prev_hash": generation.head,
                    "entry_hash": link,
                }
                generation.head = link
                generation.position = position
                generation.resumable = generation.resumable or entry.role == "assistant"
                events.append((generation.originator, generation.version, TOPIC, dumps(state)))
                entries.append(
                    (
                        fact.session_id,
                        generation.seq,
                        entry.id,
                        entry.parent_id,
                        entry.role,
                        dumps_sqlite(entry.content),
                        sqlite_text(entry.timestamp),
                        fact.writer,
                        fact.run_id,
                        link,
                        position,
                        moment_text,
                    )
                )
                receipts.append(
                    (
                        fact.event_id,
                        fact.session_id,
                        fact.session_id,
                        "applied",
                        position,
                        moment_text,
                    )
                )
                touched[fact.session_id] = generation
                results.append(
                    RecordResult(
                        fact.event_id, "applied", position, fact.session_id, fact.session_id
                    )
                )
            db.executemany(
                "INSERT INTO sessionledger_events (originator_id, originator_version, topic, state)"
                " VALUES (?, ?, ?, ?)",
                events,
            )
            db.executemany(
                "INSERT INTO ledger_entries (session_id, seq, entry_id, parent_id, role, content,"
                " timestamp, writer, run_id, entry_hash, position, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                entries,
            )
            db.executemany(
                "INSERT INTO ledger_receipts (event_id, session_id, current_session_id, outcome,"
                " position, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                receipts,
            )
            db.executemany(
                "UPDATE ledger_generations SET updated_at = ?, position = ?, entry_count = ?,"
                " head_hash = ?, resumable = ? WHERE session_id = ?",
                [
                    (moment_text, g.position, g.seq, g.head, g.resumable, session_id)
                    for session_id, g in touched.items()
                ],
            )
            db.execute(
                "UPDATE sessionledger_tracking SET notification_id = ? WHERE notification_id = ?",
                (position, self.position),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.checkpointer.committed()
        self.position = position
        return results


def main(rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sessionledger-ingest-floor-"))
    try:
        fresh = folder / "fresh.db"
        now = datetime.now(UTC)
        with Ledger.open(f"sqlite:///{fresh}") as ledger:
            keys = [f"agent:a{i % 3}:slack:direct:u{i}" for i in range(KEYS)]
            sessions = [ledger.resolve(key, at=now).session.session_id for key in keys]
        for name in ("ledger.db", "hand.db"):
            shutil.copy(fresh, folder / name)

        def chains(prefix: str) -> list[Chain]:
            return [Chain(k, s, now, prefix=prefix) for k, s in zip(keys, sessions, strict=True)]

        def batch(of: list[Chain]) -> list[dict[str, Any]]:
            return [of[i % KEYS].append() for i in range(BATCH)]

        ledger_chains, hand_chains = chains("m"), chains("m")
        ours, hand_rates = [], []
        with Ledger.open(f"sqlite:///{folder / 'ledger.db'}") as ledger:
            hand = HandWritten(folder / "hand.db")
            try:
                ledger.record(batch(ledger_chains))  # warm
                hand.record(batch(hand_chains))
                for _ in range(rounds):
                    ours.append(
                        _rate(ledger.record, [batch(ledger_chains) for _ in range(BATCHES_A_ROUND)])
                    )
                    hand_rates.append(
                        _rate(hand.record, [batch(hand_chains) for _ in range(BATCHES_A_ROUND)])
                    )
            finally:
                hand.close()
        with Ledger.open(f"sqlite:///{folder / 'hand.db'}") as check:
            report = check.verify()
        if not report.ok:
            raise SystemExit(f"the hand-written store does not verify: {report.mismatches[:3]}")
        ledger_rate, hand_rate = median(ours), median(hand_rates)
        print(f"{rounds} rounds of {BATCHES_A_ROUND} batches of {BATCH} events over {KEYS} keys")
        print(f"ledger:      {ledger_rate:,.0f} events/s ({1e6 / ledger_rate:.1f} µs an event)")
        print(f"by hand:     {hand_rate:,.0f} events/s ({1e6 / hand_rate:.1f} µs an event)")
        print(f"ledger / hand: {ledger_rate / hand_rate:.2f}x")
        print(f"the hand-written store verifies: {report.events:,} events, {report.chains} chains")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _rate(record: Any, batches: list[list[dict[str, Any]]]) -> float:
    started = time.perf_counter()
    for events in batches:
        record(events)
    return BATCH * len(batches) / (time.perf_counter() - started)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
