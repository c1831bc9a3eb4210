"""`verify` in bounded memory: transcript hash chains from the log, and the read models
against a fresh fold of the log kept in the shadow tables.

- `ChainChecker` walks one aggregate's events at a time (the caller streams the log in
  aggregate order), so it holds one sessionKey's chain heads, never the whole log.
- `compare_tables` merges the live and the expected (shadow) table, both read in key
  order through streaming cursors, and compares row by row. Events the shadow has not
  folded yet (the store kept serving meanwhile) are folded into an in-memory overlay
  over the shadow rows; the keys they touch are compared on their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, select, tuple_

from sessionledger.domain.events import (
    GenerationPruned,
    LedgerEvent,
    TranscriptAppended,
    chain_hash,
)
from sessionledger.projections.replay import Mismatch
from sessionledger.projections.rows import (
    EntryRow,
    GenerationRow,
    ReceiptRow,
    RunRow,
    SessionRow,
    row_values,
)
from sessionledger.projections.state import RowSet
from sessionledger.projections.tables import ReadModelTables

CHAIN = "transcript-chain"
STREAM_BUFFER = 1000


@dataclass(slots=True)
class _Chain:
    seq: int = 0
    head: str = ""


@dataclass(slots=True)
class ChainChecker:
    """Recomputes each generation's hash chain from its `transcript.appended` events.

    A changed entry shows as an `entryHash` mismatch on that entry (its digest no longer
    links); a changed link as `prevHash` or `seq`; a `generation.pruned` seal that does
    not name the chain's head as `headHash`/`entryCount`. After a mismatch the check goes
    on from the stored hash, so one change is reported once.
    """

    chains: dict[str, _Chain] = field(default_factory=dict)
    generations: int = 0
    entries: int = 0

    def next_aggregate(self) -> None:
        self.generations += len(self.chains)
        self.chains.clear()

    def finish(self) -> None:
        self.next_aggregate()

    def check(self, event: LedgerEvent) -> list[Mismatch]:
        if isinstance(event, TranscriptAppended):
            return self._link(event)
        if isinstance(event, GenerationPruned):
            chain = self.chains.setdefault(event.session_id, _Chain())
            key = event.session_id
            found: list[Mismatch] = []
            if event.entry_count != chain.seq:
                found.append(
                    Mismatch(CHAIN, key, "pruned.entryCount", event.entry_count, chain.seq)
                )
            if event.head_hash != chain.head:
                found.append(Mismatch(CHAIN, key, "pruned.headHash", event.head_hash, chain.head))
            return found
        return []

    def _link(self, event: TranscriptAppended) -> list[Mismatch]:
        self.entries += 1
        chain = self.chains.setdefault(event.session_id, _Chain())
        key = f"{event.session_id}#{event.seq}"
        found: list[Mismatch] = []
        if event.seq != chain.seq + 1:
            found.append(Mismatch(CHAIN, key, "seq", event.seq, chain.seq + 1))
        if event.prev_hash != chain.head:
            found.append(Mismatch(CHAIN, key, "prevHash", event.prev_hash, chain.head))
        expected = chain_hash(chain.head, event.entry.digest())
        if event.entry_hash != expected:
            found.append(Mismatch(CHAIN, key, "entryHash", event.entry_hash, expected))
        chain.seq = event.seq
        chain.head = event.entry_hash
        return found


# -- read models against the shadow fold ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    row_type: Any
    keys: tuple[str, ...]

    def key(self, row: Any) -> Any:
        values = tuple(getattr(row, k) for k in self.keys)
        return values[0] if len(values) == 1 else values


SPECS = (
    _Spec("sessions", SessionRow, ("session_key",)),
    _Spec("generations", GenerationRow, ("session_id",)),
    _Spec("runs", RunRow, ("run_id",)),
    _Spec("entries", EntryRow, ("session_id", "seq")),
    _Spec("receipts", ReceiptRow, ("event_id",)),
)


def _table(tables: ReadModelTables, name: str) -> Table:
    table: Table = getattr(tables, name)
    return table


def _ordered(connection: Connection, table: Table, spec: _Spec) -> Iterator[Any]:
    """Rows in the byte order of their key, the order Python compares str in."""
    postgres = connection.dialect.name == "postgresql"
    order = [table.c[k].collate("C") if postgres and k != "seq" else table.c[k] for k in spec.keys]
    result = connection.execution_options(
        stream_results=True, max_row_buffer=STREAM_BUFFER
    ).execute(select(table).order_by(*order))
    for row in result:
        yield spec.row_type(**row._mapping)


def _overlay(spec: _Spec, overlay: RowSet) -> tuple[dict[Any, Any], Callable[[Any], bool]]:
    """What the overlay says about this table: expected rows by key, and which keys it owns."""
    if spec.name in ("sessions", "generations", "runs"):
        rows = getattr(overlay, spec.name).rows
        known = {k: v for k, v in rows.items() if k in getattr(overlay, spec.name).dirty}
        return known, known.__contains__
    if spec.name == "entries":
        entries = {(e.session_id, e.seq): e for e in overlay.entries}
        pruned = set(overlay.pruned)
        return entries, lambda key: key in entries or key[0] in pruned
    receipts = {r.event_id: r for r in overlay.receipts}
    return receipts, receipts.__contains__


def _live_rows(
    connection: Connection, table: Table, spec: _Spec, keys: list[Any], overlay: RowSet
) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        if len(spec.keys) == 1:
            where = table.c[spec.keys[0]].in_(chunk)
        else:
            where = tuple_(*(table.c[k] for k in spec.keys)).in_(chunk)
        for row in connection.execute(select(table).where(where)):
            built = spec.row_type(**row._mapping)
            found[spec.key(built)] = built
    if spec.name == "entries" and overlay.pruned:
        column = table.c.session_id
        for row in connection.execute(select(table).where(column.in_(set(overlay.pruned)))):
            built = spec.row_type(**row._mapping)
            found[spec.key(built)] = built
    return found


def compare_rows(table: str, key: Any, have: Any, want: Any) -> list[Mismatch]:
    if have is None and want is None:
        return []
    if have is None or want is None:
        return [Mismatch(table, str(key), "*", have, want)]
    have_values, want_values = row_values(have), row_values(want)
    return [
        Mismatch(table, str(key), name, have_values[name], value)
        for name, value in want_values.items()
        if have_values[name] != value
    ]


def compare_tables(
    connection: Connection,
    live: ReadModelTables,
    expected: ReadModelTables,
    overlay: RowSet | None = None,
) -> Iterator[Mismatch]:
    """Every difference between the live tables and the expected ones (+ the overlay),
    table by table, in key order; holds one row per table side plus the overlay."""
    overlay = overlay or RowSet()
    for spec in SPECS:
        overlaid, owned = _overlay(spec, overlay)
        have_rows = (r for r in _ordered(connection, _table(live, spec.name), spec))
        want_rows = (r for r in _ordered(connection, _table(expected, spec.name), spec))
        have_rows = (r for r in have_rows if not owned(spec.key(r)))
        want_rows = (r for r in want_rows if not owned(spec.key(r)))
        yield from _merge(spec, have_rows, want_rows)
        if overlaid or (spec.name == "entries" and overlay.pruned):
            stored = _live_rows(connection, _table(live, spec.name), spec, list(overlaid), overlay)
            for key in sorted(set(overlaid) | set(stored), key=str):
                yield from compare_rows(spec.name, key, stored.get(key), overlaid.get(key))


def _merge(spec: _Spec, have_rows: Iterator[Any], want_rows: Iterator[Any]) -> Iterator[Mismatch]:
    have = next(have_rows, None)
    want = next(want_rows, None)
    while have is not None or want is not None:
        if want is None or (have is not None and spec.key(have) < spec.key(want)):
            yield Mismatch(spec.name, str(spec.key(have)), "*", have, None)
            have = next(have_rows, None)
        elif have is None or spec.key(want) < spec.key(have):
            yield Mismatch(spec.name, str(spec.key(want)), "*", None, want)
            want = next(want_rows, None)
        else:
            yield from compare_rows(spec.name, spec.key(have), have, want)
            have = next(have_rows, None)
            want = next(want_rows, None)
