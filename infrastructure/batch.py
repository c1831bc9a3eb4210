"""Recording a batch of facts: one result per fact, duplicates answered from
their receipts, accepted facts recorded and folded in the caller's unit of work."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import sessionledger.domain.conversation
from sessionledger.domain.conversation import Decision, Outcome
from sessionledger.domain.events import Fact, RunStartedFact
from sessionledger.infrastructure.collector import at_ease_for
from sessionledger.infrastructure.identifiers import owners
from sessionledger.infrastructure.unit_of_work import UnitOfWork
from sessionledger.projections.rows import CAMEL, ReceiptRow, slot_builder


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The answer for one event of a batch."""

    __pydantic_config__ = CAMEL

    event_id: str
    outcome: Outcome
    position: int | None
    session_id: str | None
    current_session_id: str | None
    reason: str | None = None


def record_batch(uow: UnitOfWork, facts: Sequence[Fact]) -> list[RecordResult]:
    """Decide each fact in order, record the accepted ones, answer one result per fact.

    A retried eventId answers as it did the first time; a repeat within the batch
    answers like its first occurrence. The aggregate decides each outcome; the fold
    gives the accepted ones their position. A runId another key took (the store's
    identifiers, infrastructure/identifiers.py) is rejected before the aggregate sees it.
    """
    return record_batches(uow, [facts])[0]


def record_batches(uow: UnitOfWork, batches: Sequence[Sequence[Fact]]) -> list[list[RecordResult]]:
    """Record several callers' batches in one unit of work (group commit): see
    `_record_batches`; large groups run with the cyclic collector at ease."""
    return at_ease_for(sum(map(len, batches)), lambda: _record_batches(uow, batches))


def _record_batches(uow: UnitOfWork, batches: Sequence[Sequence[Fact]]) -> list[list[RecordResult]]:
    """Record several callers' batches in one unit of work (group commit): each batch is
    answered exactly as `record_batch` would answer it had the batches been recorded one
    after the other, in this order, each in its own transaction.

    One decision pass over all the facts, one write of events and rows: the per-batch
    difference is only in how repeats are answered. An eventId that an earlier batch of
    the group recorded answers like any retry, from that event's receipt; a repeat
    within one batch answers like its first occurrence in that batch.
    """
    results: list[list[RecordResult | None]] = [[None] * len(facts) for facts in batches]
    receipts = uow.projector.receipts(uow.connection, {f.event_id for b in batches for f in b})
    logged = _logged_fingerprints(uow, receipts.values())
    started_here: dict[str, str] = {}  # runId -> sessionKey, for runs started in this group
    accepted: list[tuple[int, int, Decision]] = []  # (batch, index, decision)
    recorded_here: dict[str, int] = {}  # eventId -> the batch that recorded it
    retried: list[tuple[int, int]] = []  # (batch, index) of eventIds an earlier batch recorded
    repeated = False  # an eventId repeated within a batch (answered after the commit)
    # By the discriminator: isinstance on a pydantic class goes through its metaclass,
    # ~70 ns for each fact that is not one (nearly all).
    started = {
        f.run_id for b in batches for f in b if f.type == RUN_STARTED and f.run_id is not None
    }
    run_owners = owners(uow.connection, "runId", started)
    first_seen: list[dict[str, int]] = []
    conversations = uow.conversations
    # One moment for every event the unit of work records: they are recorded together,
    # and a shared moment is dumped and turned into SQLite's text once, not per event.
    # Read through the module, whose clock tests replace.
    recorded_at = sessionledger.domain.conversation.utcnow()

    for number, facts in enumerate(batches):
        seen: dict[str, int] = {}
        first_seen.append(seen)
        answers = results[number]
        for index, fact in enumerate(facts):
            event_id = fact.event_id
            receipt = receipts.get(event_id)
            if receipt is not None:
                answers[index] = _from_receipt(fact, receipt, logged[receipt.position])
                continue
            if recorded_here.get(event_id, number) != number:
                retried.append((number, index))  # answered below, from its receipt
                continue
            if event_id in seen:
                repeated = True
                continue  # answered below, from the first occurrence
            seen[event_id] = index
            key = fact.session_key
            conversation = conversations[key] if key in conversations else uow.conversation(key)
            if conversation is None:
                unknown = f"sessionKey: unknown session {key!r}; resolve it first"
                answers[index] = _rejected(fact, None, unknown)
                continue
            started_run = fact.run_id if fact.type == RUN_STARTED else None
            if started_run is not None:
                owner = run_owners.get(started_run) or started_here.get(started_run)
                if owner is not None and owner != key:
                    answers[index] = _rejected(
                        fact,
                        conversation.current_session_id,
                        f"runId: {started_run!r} is already used by another session",
                    )
                    continue
            decision = conversation.record(fact, recorded_at)
            if uow.add(conversation):
                # Answered after the commit, from the fold (position, rows).
                accepted.append((number, index, decision))
                recorded_here[event_id] = number
                if started_run is not None:
                    started_here[started_run] = key
                continue
            answers[index] = _result(
                event_id,
                decision.outcome,
                None,
                decision.session_id,
                decision.current_session_id,
                decision.reason,
            )

    uow.commit()
    # The aggregate decided each outcome; the fold gives each its position.
    offset = len(uow.transitions) - len(accepted)
    written: dict[str, ReceiptRow] = {}
    for (number, index, decision), transition in zip(
        accepted, uow.transitions[offset:], strict=True
    ):
        receipt_row = transition.receipt
        assert receipt_row is not None  # the projector folds with receipts
        written[receipt_row.event_id] = receipt_row
        results[number][index] = _result(
            receipt_row.event_id,
            decision.outcome,
            receipt_row.position,
            decision.session_id,
            decision.current_session_id,
            # An archived event tells its writer whether the key rotated or was deleted.
            decision.reason,
        )
    for number, index in retried:
        fact = batches[number][index]
        recorder = recorded_here[fact.event_id]  # the batch, and where in it: its first
        original = batches[recorder][first_seen[recorder][fact.event_id]]
        results[number][index] = _from_receipt(fact, written[fact.event_id], original.fingerprint())
    if not repeated:
        return cast(list[list[RecordResult]], results)
    for facts, answers, seen in zip(batches, results, first_seen, strict=True):
        for index, fact in enumerate(facts):
            if answers[index] is None:
                first = answers[seen[fact.event_id]]
                assert first is not None
                same = facts[seen[fact.event_id]].fingerprint() == fact.fingerprint()
                answers[index] = (
                    RecordResult(
                        fact.event_id,
                        first.outcome,
                        first.position,
                        first.session_id,
                        first.current_session_id,
                        "duplicate eventId within the batch",
                    )
                    if same
                    else _rejected(fact, None, "eventId: already used for a different event")
                )
    return [[r for r in answers if r is not None] for answers in results]


RUN_STARTED = RunStartedFact.model_fields["type"].default

# RecordResult built through a plain twin (every field given): a frozen dataclass's
# __init__ sets each field through object.__setattr__, and a batch answers every event.
_result = slot_builder(RecordResult)


def _logged_fingerprints(uow: UnitOfWork, receipts: Iterable[ReceiptRow]) -> dict[int, str]:
    """The fingerprints of the logged events these receipts answer for, by position.

    A retry is the same event when its fingerprint equals the logged event's: derived
    from the log on the rare retry rather than stored in every receipt, where it cost a
    dump and a SHA-256 per event folded (a rebuild's and every write's) and a quarter of
    the receipts' bytes. Positions come in runs (a batch's events are logged together):
    one read per run."""
    fingerprints: dict[int, str] = {}
    positions = sorted(r.position for r in receipts)
    start = 0
    while start < len(positions):
        end = start
        while end + 1 < len(positions) and positions[end + 1] == positions[end] + 1:
            end += 1
        first = positions[start]
        for position, event in uow.read_log(first - 1, end - start + 1):
            fingerprints[position] = event.fingerprint()
        start = end + 1
    return fingerprints


def _from_receipt(fact: Fact, receipt: ReceiptRow, logged: str) -> RecordResult:
    """A retried eventId: the original answer if it is the same fact (`logged`: the
    fingerprint of the event recorded for it), else a rejection."""
    if logged != fact.fingerprint():
        return _rejected(fact, None, "eventId: already used for a different event")
    return RecordResult(
        fact.event_id,
        cast(Outcome, receipt.outcome),
        receipt.position,
        receipt.session_id,
        receipt.current_session_id,
        f"duplicate eventId: already recorded at position {receipt.position}",
    )


def _rejected(fact: Fact, current: str | None, reason: str) -> RecordResult:
    return RecordResult(fact.event_id, "rejected", None, fact.session_id, current, reason)
