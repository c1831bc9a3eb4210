"""The `peers` scenario: the session stores our users would otherwise pick, side by side.

Every store appends 270-byte transcript messages one durable call at a time (one
conversation sequentially; then 16 conversations at once) and reads a transcript of
`Sizes.transcript` items back, in the same run, each in its own file in the bench's
work directory (or, given a PostgreSQL URL, in that database). The stores:

* sessionledger: `Ledger.record([a transcript.appended fact])`, `Ledger.transcript(key)`;
* the OpenAI Agents SDK: `SQLiteSession` and `SQLAlchemySession` (`session.add_items`,
  `session.get_items`);
* Google's ADK: `SqliteSessionService` and `DatabaseSessionService`
  (`append_event(session, Event)`, `get_session`).

Each store runs as shipped, through its public API, with its own defaults (journal
mode, synchronous level, pool size): what a user gets who picks it. The peers are an
optional extra (`pip install -e '.[bench]'`); a store whose package is not installed is
skipped with a message, and the scenario is skipped when no peer can run.
"""

from __future__ import annotations

import asyncio
import importlib
import statistics
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from bench.facts import Chain
from sessionledger.infrastructure.ledger import Ledger

AT_ONCE = 16  # conversations appended to at the same time
READS = 10  # timed reads of the transcript per repeat
_LOREM = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor " * 4
INSTALL = "pip install -e '.[bench]'"
T = TypeVar("T")


def message(n: int) -> str:
    """The n-th transcript message: 270 bytes of text, as every store is given it."""
    return f"turn {n}: {_LOREM}"[:270]


@dataclass(frozen=True)
class Sizes:
    repeats: int
    appends: int  # sequential appends to one conversation, per repeat
    each: int  # appends to each of the AT_ONCE conversations, per repeat
    transcript: int  # items in the transcript read back


@dataclass(frozen=True)
class Measurement:
    task: str
    store: str
    value: float
    unit: str  # "appends/s" (higher is better) or "ms" (lower is better)
    failed: int = 0  # appends that raised (not counted in the rate)
    error: str = ""  # the first of their errors

    @property
    def rate(self) -> bool:
        return self.unit != "ms"


def _task_names(sizes: Sizes) -> tuple[str, str, str]:
    return (
        "append, 1 conversation",
        f"append, {AT_ONCE} conversations at once",
        f"read {sizes.transcript:,} items",
    )


class Store(ABC):
    """One session store under test. Conversations are numbered: 0 to AT_ONCE - 1 take
    the appends, AT_ONCE holds the transcript that is read back."""

    name: str

    def __init__(self) -> None:
        self.failures: list[str] = []  # appends that raised, since measure() last looked

    def failed(self, error: Exception) -> None:
        """An append raised: it counts as not done, its error is kept, and the run goes
        on, as a gateway's would (that message is lost, the conversation is not)."""
        self.failures.append(f"{type(error).__name__}: {error}".splitlines()[0][:100])

    @abstractmethod
    def append_sequentially(self, count: int) -> float:
        """Seconds for `count` appends to conversation 0, one durable call each."""

    @abstractmethod
    def append_at_once(self, count: int) -> float:
        """Seconds for `count` appends to each of conversations 0..AT_ONCE-1, all of
        them at the same time (one durable call per append)."""

    @abstractmethod
    def fill(self, count: int) -> None:
        """Give conversation AT_ONCE `count` items (untimed: the read's fixture)."""

    @abstractmethod
    def read(self) -> int:
        """Read conversation AT_ONCE's items back; how many there are."""

    @abstractmethod
    def close(self) -> None: ...


# -- ours ----------------------------------------------------------------------------------


class Ours(Store):
    """The Ledger's Python API. At once: one thread per conversation, as a gateway's
    worker threads call it (the API is synchronous; concurrent calls share commits)."""

    name = "sessionledger"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.ledger = Ledger.open(url)
        run = uuid.uuid4().hex[:8]
        at = datetime.now(UTC)
        self.chains = []
        for i in range(AT_ONCE + 1):
            key = f"agent:peers{run}:telegram:direct:{i}"
            session_id = self.ledger.resolve(key, at=at).session.session_id
            self.chains.append(Chain(key, session_id, at))
        for chain in self.chains[:AT_ONCE]:  # warm: aggregates cached, statements compiled
            self.ledger.record([self.fact(chain)])

    @staticmethod
    def fact(chain: Chain) -> dict[str, Any]:
        return chain.append(message(chain.count))

    def append(self, fact: dict[str, Any]) -> None:
        try:
            self.ledger.record([fact])
        except Exception as error:
            self.failed(error)

    def append_sequentially(self, count: int) -> float:
        chain = self.chains[0]
        facts = [self.fact(chain) for _ in range(count)]
        started = time.perf_counter()
        for fact in facts:
            self.append(fact)
        return time.perf_counter() - started

    def append_at_once(self, count: int) -> float:
        work = [[self.fact(chain) for _ in range(count)] for chain in self.chains[:AT_ONCE]]
        ready = threading.Barrier(AT_ONCE + 1)

        def client(facts: list[dict[str, Any]]) -> None:
            ready.wait()
            for fact in facts:
                self.append(fact)

        threads = [threading.Thread(target=client, args=(facts,)) for facts in work]
        for thread in threads:
            thread.start()
        ready.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    def fill(self, count: int) -> None:
        chain = self.chains[AT_ONCE]
        while chain.count < count:
            n = min(1000, count - chain.count)  # the most one record call takes
            self.ledger.record([self.fact(chain) for _ in range(n)])

    def read(self) -> int:
        return len(self.ledger.transcript(self.chains[AT_ONCE].key))

    def close(self) -> None:
        self.ledger.close()


# -- the async peers -----------------------------------------------------------------------


class AsyncStore(Store):
    """A peer whose API is asyncio: every call runs on one event loop of its own. At
    once: one task per conversation on that loop, as an asyncio server (the frameworks'
    own runners and web servers) serves concurrent chats; ADK's services hold asyncio
    locks, which bind them to one loop."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.sent = [0] * (AT_ONCE + 1)  # messages appended per conversation
        self.run(self.start())
        for conversation in range(AT_ONCE):  # warm: tables made, connections opened
            self.run(self.send(conversation))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    @abstractmethod
    async def start(self) -> None:
        """Open the store and create conversations 0..AT_ONCE."""

    @abstractmethod
    async def append(self, conversation: int, text: str) -> None:
        """Append one message to `conversation`, in one durable call."""

    @abstractmethod
    async def items(self, conversation: int) -> int:
        """Read `conversation` back; how many items it holds."""

    @abstractmethod
    async def stop(self) -> None: ...

    async def send(self, conversation: int) -> None:
        n = self.sent[conversation]
        self.sent[conversation] += 1
        await self.append(conversation, message(n))

    async def _sends(self, conversation: int, count: int) -> None:
        for _ in range(count):
            try:
                await self.send(conversation)
            except Exception as error:
                self.failed(error)

    async def _timed(self, work: Coroutine[Any, Any, Any]) -> float:
        started = time.perf_counter()
        await work
        return time.perf_counter() - started

    def append_sequentially(self, count: int) -> float:
        return self.run(self._timed(self._sends(0, count)))

    async def _at_once(self, count: int) -> None:
        await asyncio.gather(*(self._sends(c, count) for c in range(AT_ONCE)))

    def append_at_once(self, count: int) -> float:
        return self.run(self._timed(self._at_once(count)))

    def fill(self, count: int) -> None:
        self.run(self._sends(AT_ONCE, count - self.sent[AT_ONCE]))

    def read(self) -> int:
        return self.run(self.items(AT_ONCE))

    def close(self) -> None:
        try:
            self.run(self.stop())
        finally:
            self.loop.close()


def _item(text: str, index: int) -> Any:
    """A chat message as the OpenAI Agents SDK stores one (an input item)."""
    return {"role": "assistant" if index % 2 else "user", "content": text}


class OpenAISqlite(AsyncStore):
    """`agents.SQLiteSession`: one session object per conversation on one file."""

    name = "OpenAI SQLiteSession"

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__()

    async def start(self) -> None:
        from agents import SQLiteSession

        run = uuid.uuid4().hex[:8]
        self.sessions = [SQLiteSession(f"{run}-{i}", self.path) for i in range(AT_ONCE + 1)]

    async def append(self, conversation: int, text: str) -> None:
        await self.sessions[conversation].add_items([_item(text, self.sent[conversation])])

    async def items(self, conversation: int) -> int:
        return len(await self.sessions[conversation].get_items())

    async def stop(self) -> None:
        for session in self.sessions:
            session.close()


class OpenAISqlAlchemy(AsyncStore):
    """`agents.extensions.memory.SQLAlchemySession`: one session object per
    conversation, all on one async engine (as its docs suggest for an application)."""

    name = "OpenAI SQLAlchemySession"

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    async def start(self) -> None:
        from agents.extensions.memory import SQLAlchemySession
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(self.url)
        run = uuid.uuid4().hex[:8]
        self.sessions = [
            SQLAlchemySession(f"{run}-{i}", engine=self.engine, create_tables=True)
            for i in range(AT_ONCE + 1)
        ]

    async def append(self, conversation: int, text: str) -> None:
        await self.sessions[conversation].add_items([_item(text, self.sent[conversation])])

    async def items(self, conversation: int) -> int:
        return len(await self.sessions[conversation].get_items())

    async def stop(self) -> None:
        await self.engine.dispose()


class Adk(AsyncStore):
    """An ADK session service: one session per conversation, appended to with
    `append_event(session, Event)` as its Runner does, the Session object kept."""

    def __init__(self, name: str, service: Callable[[], Any]) -> None:
        self.name = name
        self.service_factory = service
        super().__init__()

    async def start(self) -> None:
        self.service = self.service_factory()
        self.user = uuid.uuid4().hex[:8]
        self.sessions = [
            await self.service.create_session(app_name="bench", user_id=self.user)
            for _ in range(AT_ONCE + 1)
        ]

    async def append(self, conversation: int, text: str) -> None:
        from google.adk.events import Event
        from google.genai import types

        role = "model" if self.sent[conversation] % 2 else "user"
        event = Event(
            invocation_id=f"i{conversation}",
            author=role,
            content=types.Content(role=role, parts=[types.Part(text=text)]),
        )
        await self.service.append_event(self.sessions[conversation], event)

    async def items(self, conversation: int) -> int:
        session = await self.service.get_session(
            app_name="bench", user_id=self.user, session_id=self.sessions[conversation].id
        )
        assert session is not None
        return len(session.events)

    async def stop(self) -> None:
        await self.service.close()


# -- which peers can run --------------------------------------------------------------------


def _importable(*modules: str) -> bool:
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def _adk_sqlite(path: Path) -> Callable[[], Any]:
    def make() -> Any:
        from google.adk.sessions.sqlite_session_service import SqliteSessionService

        return SqliteSessionService(str(path))

    return make


def _adk_database(url: str) -> Callable[[], Any]:
    def make() -> Any:
        from google.adk.sessions import DatabaseSessionService

        return DatabaseSessionService(db_url=url)

    return make


@dataclass(frozen=True)
class Candidate:
    name: str
    modules: tuple[str, ...]  # what it needs importable
    open: Callable[[], Store]


def candidates(workdir: Path, postgres: str | None) -> list[Candidate]:
    """Ours first, then the peers; on SQLite each in its own file of `workdir`, or all
    in the database at `postgres` (a SQLAlchemy URL; the peers reach it through
    asyncpg, the driver both frameworks document for PostgreSQL)."""
    openai = ("agents",)
    alchemy = ("sqlalchemy.ext.asyncio", "greenlet")
    adk = ("google.adk.events", "google.genai")
    if postgres is None:

        def file(name: str) -> Path:
            path = workdir / f"peers-{name}.db"
            for stale in workdir.glob(f"peers-{name}.db*"):  # a reused --dir: start empty
                stale.unlink()
            return path

        def sqlite_url(name: str) -> str:
            return f"sqlite+aiosqlite:///{file(name)}"

        return [
            Candidate(Ours.name, (), lambda: Ours(f"sqlite:///{file('ours')}")),
            Candidate(OpenAISqlite.name, openai, lambda: OpenAISqlite(file("openai-sqlite"))),
            Candidate(
                OpenAISqlAlchemy.name,
                (*openai, *alchemy, "aiosqlite"),
                lambda: OpenAISqlAlchemy(sqlite_url("openai-sqlalchemy")),
            ),
            Candidate(
                "ADK SqliteSessionService",
                (*adk, "aiosqlite"),
                lambda: Adk("ADK SqliteSessionService", _adk_sqlite(file("adk-sqlite"))),
            ),
            Candidate(
                "ADK DatabaseSessionService",
                (*adk, *alchemy, "aiosqlite"),
                lambda: Adk(
                    "ADK DatabaseSessionService", _adk_database(sqlite_url("adk-database"))
                ),
            ),
        ]
    asyncpg = make_url(postgres).set(drivername="postgresql+asyncpg")
    peer_url = asyncpg.render_as_string(hide_password=False)
    return [
        Candidate(Ours.name, (), lambda: Ours(postgres)),
        Candidate(
            OpenAISqlAlchemy.name,
            (*openai, *alchemy, "asyncpg"),
            lambda: OpenAISqlAlchemy(peer_url),
        ),
        Candidate(
            "ADK DatabaseSessionService",
            (*adk, *alchemy, "asyncpg"),
            lambda: Adk("ADK DatabaseSessionService", _adk_database(peer_url)),
        ),
    ]


# -- the scenario ---------------------------------------------------------------------------


def measure(
    workdir: Path, sizes: Sizes, postgres: str | None = None, say: Callable[[str], None] = print
) -> list[Measurement]:
    """Every store that can run; [] when no peer can (said so).

    The stores are measured in turns: each of `sizes.repeats` rounds gives every store
    its sequential appends, then its appends at once, then its reads, so a disk other
    processes load now and then slows all of them alike rather than whichever ran at
    the time. Appends are counted per second (the median of the rounds); the read is
    the median of READS timed reads per round (then of the rounds), the transcript
    checked to hold `sizes.transcript` items.
    """
    runnable: list[Candidate] = []
    missing: list[Candidate] = []
    for candidate in candidates(workdir, postgres):
        (runnable if _importable(*candidate.modules) else missing).append(candidate)
    if missing:
        say(f"  not installed ({INSTALL}), skipped: {', '.join(c.name for c in missing)}")
    if [c.name for c in runnable] == [Ours.name]:
        say(f"  peers: skipped, no peer is installed ({INSTALL})")
        return []
    sequential, at_once, read = _task_names(sizes)
    appends: list[tuple[str, Callable[[Store], float], int]] = [
        (sequential, lambda store: store.append_sequentially(sizes.appends), sizes.appends),
        (at_once, lambda store: store.append_at_once(sizes.each), AT_ONCE * sizes.each),
    ]
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    failures: dict[tuple[str, str], list[str]] = defaultdict(list)
    stores: list[Store] = []
    try:
        for candidate in runnable:  # ours first: on PostgreSQL it makes its tables first
            stores.append(candidate.open())
            stores[-1].fill(sizes.transcript)
        for round_ in range(sizes.repeats):
            say(f"  round {round_ + 1} of {sizes.repeats}")
            for task, run, attempted in appends:
                for store in stores:
                    store.failures.clear()
                    seconds = run(store)
                    failures[store.name, task] += store.failures
                    samples[store.name, task].append((attempted - len(store.failures)) / seconds)
            for store in stores:
                samples[store.name, read].append(_read_ms(store, sizes))
    finally:
        for store in stores:
            store.close()
    return [
        Measurement(
            task,
            store.name,
            statistics.median(samples[store.name, task]),
            "ms" if task == read else "appends/s",
            len(failures[store.name, task]),
            next(iter(failures[store.name, task]), ""),
        )
        for store in stores
        for task in (sequential, at_once, read)
    ]


def _read_ms(store: Store, sizes: Sizes) -> float:
    """The median of READS reads of the transcript, in ms."""
    times = []
    for _ in range(READS):
        started = time.perf_counter()
        held = store.read()
        times.append(time.perf_counter() - started)
        assert held == sizes.transcript, (store.name, held)
    return 1000 * statistics.median(times)


def _fmt(m: Measurement) -> str:
    return f"{m.value:,.2f} ms" if not m.rate else f"{m.value:,.0f} {m.unit}"


def best_peer(results: list[Measurement], task: str) -> Measurement:
    """The fastest store other than ours at `task`."""
    peers = [m for m in results if m.task == task and m.store != Ours.name]
    return (max if peers[0].rate else min)(peers, key=lambda m: m.value)


def ratio(m: Measurement, results: list[Measurement]) -> str:
    """`m` against the best peer at the same task: how many times its rate (appends),
    or its time (reads)."""
    best = best_peer(results, m.task)
    kind = "rate" if m.rate else "time"
    note = (
        "the best peer"
        if m is best
        else f"{m.value / best.value:.2f}x the best peer's {kind} ({best.store})"
    )
    if m.failed:
        note += f"; {m.failed:,} appends failed, not counted (first: {m.error})"
    return note


def table(results: list[Measurement], rounds: int) -> str:
    """Stores by task: each value (the median of `rounds`) and its ratio to the best peer."""
    tasks = list(dict.fromkeys(m.task for m in results))
    stores = list(dict.fromkeys(m.store for m in results))
    cell = {(m.store, m.task): m for m in results}

    def text(m: Measurement) -> str:
        best = best_peer(results, m.task)
        failed = f", {m.failed:,} failed" if m.failed else ""
        return f"{_fmt(m)} ({m.value / best.value:.2f}x{failed})"

    rows = [("store", *tasks)] + [
        (store, *(text(cell[store, task]) for task in tasks)) for store in stores
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(
        [
            *lines,
            f"(median of {rounds} rounds; ratio: to the best peer, appends: rate, reads: time;"
            " failed: appends that raised)",
        ]
    )
