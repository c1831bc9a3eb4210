"""Recording a batch of facts: one result per fact (SPEC §6), duplicates answered from
their receipts, accepted facts recorded and folded in the caller's unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from domain.conversation import Decision, Outcome
from domain.events import Fact, RunStartedFact
from infrastructure.unit_of_work import UnitOfWork
from projections.rows import CAMEL


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The answer for one event of a batch (SPEC §6)."""

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
    answers like its first occurrence; positions come from the fold, not the aggregate.
    """
    results: list[RecordResult | None] = [None] * len(facts)
    receipts = uow.projector.receipts(uow.session, {f.event_id for f in facts})
    first_seen: dict[str, int] = {}
    started_here: dict[str, str] = {}  # runId -> sessionKey, for runs started in this batch
    accepted: list[tuple[int, Decision]] = []
    uow.rowset.prefetch(run_ids=[f.run_id for f in facts if isinstance(f, RunStartedFact)])

    for index, fact in enumerate(facts):
        receipt = receipts.get(fact.event_id)
        if receipt is not None:
            if receipt.fingerprint == fact.fingerprint():
                results[index] = RecordResult(
                    fact.event_id,
                    cast(Outcome, receipt.outcome),
                    receipt.position,  # type: ignore[arg-type]
                    receipt.session_id,
                    receipt.current_session_id,
                    f"duplicate eventId: already recorded at position {receipt.position}",
                )
            else:
                results[index] = _rejected(
                    fact, None, "eventId: already used for a different event"
                )
            continue
        if fact.event_id in first_seen:
            continue  # answered below, from the first occurrence
        first_seen[fact.event_id] = index
        conversation = uow.conversation(fact.session_key)
        if conversation is None:
            results[index] = _rejected(
                fact, None, f"sessionKey: unknown session {fact.session_key!r}; resolve it first"
            )
            continue
        if isinstance(fact, RunStartedFact):
            known = uow.rowset.run(fact.run_id)
            owner = known.session_key if known is not None else started_here.get(fact.run_id)
            if owner is not None and owner != fact.session_key:
                results[index] = _rejected(
                    fact,
                    conversation.current_session_id,
                    f"runId: {fact.run_id!r} is already used by another session",
                )
                continue
        decision = conversation.record(fact)
        if uow.add(conversation):
            accepted.append((index, decision))
            if isinstance(fact, RunStartedFact):
                started_here[fact.run_id] = fact.session_key
        results[index] = RecordResult(
            fact.event_id,
            decision.outcome,
            None,
            decision.session_id,
            decision.current_session_id,
            decision.reason,
        )

    uow.commit()
    # The fold, not the aggregate, fills in positions and the row each event ended on.
    offset = len(uow.transitions) - len(accepted)
    for (index, decision), transition in zip(accepted, uow.transitions[offset:], strict=True):
        if transition.effect.kind != decision.outcome:
            raise AssertionError(f"fold and aggregate disagree on {facts[index].event_id!r}")
        receipt_row = transition.receipt
        results[index] = RecordResult(
            facts[index].event_id,
            decision.outcome,
            receipt_row.position,
            receipt_row.session_id,
            receipt_row.current_session_id,
            _takeover(decision.outcome, receipt_row.current_session_id),
        )
    for index, fact in enumerate(facts):
        if results[index] is None:
            first = results[first_seen[fact.event_id]]
            assert first is not None
            same = facts[first_seen[fact.event_id]].fingerprint() == fact.fingerprint()
            results[index] = (
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
    return [r for r in results if r is not None]


def _takeover(outcome: Outcome, current_session_id: str | None) -> str | None:
    """SPEC §4.6: a real takeover tells the writer whether the key rotated or was deleted."""
    if outcome != "archived":
        return None
    return "deleted" if current_session_id is None else "rotated"


def _rejected(fact: Fact, current: str | None, reason: str) -> RecordResult:
    return RecordResult(fact.event_id, "rejected", None, fact.session_id, current, reason)
