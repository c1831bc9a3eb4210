"""Invariant 12, transcript integrity (docs/invariants.md): unique ids, parents in the
generation, a hash chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.events import (
    TranscriptAppended,
    TranscriptAppendedFact,
    TranscriptEntry,
    chain_hash,
)
from sessionledger.projections.replay import replay
from sessionledger.projections.rows import EntryRow

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)

UTC_ONLY = st.just(0)


def verify(entries: list[EntryRow]) -> list[str]:
    """Recompute one generation's chain from stored rows; the problems found."""
    problems: list[str] = []
    head, seen = "", set()
    for seq, row in enumerate(entries, start=1):
        entry = TranscriptEntry(
            id=row.entry_id,
            parent_id=row.parent_id,
            role=row.role,  # type: ignore[arg-type]
            content=row.content,
            timestamp=row.timestamp,
        )
        if row.seq != seq:  # the row's link to `head` is implied: the previous row
            problems.append(f"{seq}: out of order")
        if row.entry_id in seen:
            problems.append(f"{seq}: duplicate id")
        if row.parent_id is not None and row.parent_id not in seen:
            problems.append(f"{seq}: dangling parent")
        if chain_hash(head, entry.digest()) != row.entry_hash:
            problems.append(f"{seq}: hash mismatch")
        seen.add(row.entry_id)
        head = row.entry_hash
    return problems


@st.composite
def transcripts(draw: st.DrawFn, offsets: st.SearchStrategy[int] = UTC_ONLY) -> list[EntryRow]:
    """A generation's transcript as the aggregate and the fold produce it."""
    conversation = Conversation.open("agent:main:main", at=T0, writer="ingress")
    sid = conversation.current_session_id
    assert sid is not None
    ids: list[str] = []
    for n in range(draw(st.integers(1, 8))):
        tz = timezone(timedelta(minutes=draw(offsets)))
        entry = TranscriptEntry(
            id=f"m{n}",
            parent_id=draw(st.sampled_from([None, *ids])),
            role=draw(st.sampled_from(["user", "assistant", "toolResult", "bashExecution"])),
            content=draw(json_values),
            timestamp=(T0 + timedelta(seconds=n)).astimezone(tz),
        )
        fact = TranscriptAppendedFact(
            event_id=f"e{n}",
            session_key="agent:main:main",
            session_id=sid,
            occurred_at=T0,
            writer="runner",
            entry=entry,
        )
        assert conversation.record(fact).outcome == "applied"
        ids.append(entry.id)
    events = conversation.collect_events()
    rows = replay(enumerate(events, start=1))  # type: ignore[arg-type]
    assert all(isinstance(e, TranscriptAppended) for e in events[1:])
    return rows.entries


@given(transcripts())
def test_an_untouched_chain_verifies(entries: list[EntryRow]) -> None:
    assert verify(entries) == []


def _tamper(entries: list[EntryRow], how: str, index: int) -> list[EntryRow]:
    rows = list(entries)
    row = rows[index]
    changes: dict[str, dict[str, Any]] = {
        "content": {"content": {"tampered": row.content}},
        "role": {"role": "system" if row.role != "system" else "user"},
        "timestamp": {"timestamp": row.timestamp + timedelta(microseconds=1)},
        "parent": {"parent_id": None if row.parent_id else "m-ghost"},
        "id": {"entry_id": row.entry_id + "x"},
    }
    if how == "drop":
        del rows[index]
    elif how == "swap":
        rows[index], rows[index - 1] = rows[index - 1], rows[index]
    else:
        from dataclasses import replace

        rows[index] = replace(row, **changes[how])
    return rows


@given(
    transcripts(),
    st.sampled_from(["content", "role", "timestamp", "parent", "id", "drop", "swap"]),
    st.data(),
)
def test_any_change_to_stored_history_is_detected(
    entries: list[EntryRow], how: str, data: st.DataObject
) -> None:
    # Invariant 12: each generation's entries are hash-chained so verify detects any change.
    if how in ("drop", "swap") and len(entries) < 2:
        return
    # Dropping the tail leaves a valid prefix (the stored head hash catches that), so drop
    # anything but the last entry; a swap needs a predecessor.
    low, high = (1 if how == "swap" else 0), len(entries) - (2 if how == "drop" else 1)
    index = data.draw(st.integers(low, high))
    assert verify(_tamper(entries, how, index)) != []


@given(transcripts(offsets=st.integers(-600, 600).filter(bool)))
def test_chains_with_non_utc_timestamps_verify_from_rows(entries: list[EntryRow]) -> None:
    assert verify(entries) == []
