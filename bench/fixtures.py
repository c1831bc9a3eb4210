"""Large stores, built fast and cached.

The sessions store (N keys of ten events each: so 100,000 sessions hold the 1,000,000
events the rebuild scenario folds) is written through the Ledger's own unit of work in
batches of a few hundred keys per transaction: each key's Conversation decides its
facts exactly as `Ledger.record` would, and the projector folds them in the same
transaction. It is cached under the temp dir, keyed by the code that decides what is
stored (events, aggregate, tables, migrations, the facts, FIXTURE_VERSION), so a second
run starts at once; the rebuild scenario runs before the reads, so the read models are
this code's. Smaller stores (a 1,000-entry transcript, a 10,000-event key) are built
per run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.facts import Chain
from sessionledger.domain.conversation import Conversation
from sessionledger.infrastructure.ledger import Ledger, UnitOfWork, parse_batch

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "sessionledger-bench-cache"
_STORED_BY = [
    "domain/*.py",
    "projections/tables.py",
    "migrations/versions/*.py",
    "bench/facts.py",
]
FIXTURE_VERSION = 2  # bump when write_conversations or meta.json change what they store
KEYS_PER_TRANSACTION = 200


@dataclass(frozen=True)
class SessionsStore:
    path: Path
    sessions: int
    events: int
    built_at: datetime  # the facts' occurredAt
    # When the last fact was recorded: readers' clocks sit just after it, so a report's
    # window (recordedAt, 60 minutes) covers every run however long the build took.
    finished_at: datetime

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def key(self, index: int) -> str:
        return session_key(index)


def session_key(index: int) -> str:
    return f"agent:bench:telegram:direct:{index}"


def _code_digest() -> str:
    digest = hashlib.sha256(str(FIXTURE_VERSION).encode())
    for pattern in _STORED_BY:
        for path in sorted(REPO.glob(pattern)):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def sessions_store(sessions: int, *, fresh: bool = False, log: bool = True) -> SessionsStore:
    """A store of `sessions` keys, ten events each, from the cache when it is there."""
    directory = CACHE / f"sessions-{sessions}-{_code_digest()}"
    meta = directory / "meta.json"
    if fresh and directory.exists():
        shutil.rmtree(directory)
    if meta.exists():
        info = json.loads(meta.read_text())
        return SessionsStore(
            directory / "ledger.db",
            sessions,
            info["events"],
            datetime.fromisoformat(info["builtAt"]),
            datetime.fromisoformat(info["finishedAt"]),
        )
    if CACHE.exists():  # stores of older code only take disk space
        for old in CACHE.glob(f"sessions-{sessions}-*"):
            shutil.rmtree(old, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ledger.db"
    for stale in directory.glob("ledger.db*"):
        stale.unlink()
    built_at = datetime.now(UTC)
    started = time.perf_counter()
    with Ledger.open(f"sqlite:///{path}") as ledger:
        for start in range(0, sessions, KEYS_PER_TRANSACTION):
            keys = range(start, min(start + KEYS_PER_TRANSACTION, sessions))
            write_conversations(ledger, keys, built_at)
            if log and (start // KEYS_PER_TRANSACTION) % 50 == 49:
                done = start + KEYS_PER_TRANSACTION
                rate = done * 10 / (time.perf_counter() - started)
                print(f"  building: {done:,}/{sessions:,} sessions ({rate:,.0f} events/s)")
        events = ledger.positions()[1]
    finished_at = datetime.now(UTC)
    meta.write_text(
        json.dumps(
            {
                "events": events,
                "builtAt": built_at.isoformat(),
                "finishedAt": finished_at.isoformat(),
            }
        )
    )
    if log:
        elapsed = time.perf_counter() - started
        print(f"  built {sessions:,} sessions, {events:,} events in {elapsed:.0f} s: {path}")
    return SessionsStore(path, sessions, events, built_at, finished_at)


def write_conversations(ledger: Ledger, indexes: range, at: datetime) -> None:
    """Open each key and decide its nine facts: one transaction, one fold."""

    def decide(uow: UnitOfWork) -> None:
        recorded_at = datetime.now(UTC)  # one moment a unit of work, as Ledger.record's
        for index in indexes:
            key = session_key(index)
            conversation = Conversation.open(key, at=at, writer="ingress")
            assert conversation.current_session_id is not None
            chain = Chain(key, conversation.current_session_id, at)
            for fact in parse_batch(chain.conversation(index)):
                decision = conversation.record(fact, recorded_at)
                assert decision.outcome == "applied", decision
            uow.add(conversation)

    ledger.store.transact(decide)


def long_key(ledger: Ledger, key: str, events: int, at: datetime, batch: int = 1000) -> Chain:
    """A key whose log holds `events` events (its opening, then transcript appends)."""
    sid = ledger.resolve(key, at=at).session.session_id
    chain = Chain(key, sid, at)
    remaining = events - 1
    while remaining > 0:
        n = min(batch, remaining)
        results = ledger.record([chain.append() for _ in range(n)])
        assert all(r.outcome == "applied" for r in results)
        remaining -= n
    return chain
