"""The fold: (read-model state, recorded event) -> transition.

This is the only place that knows how an event changes the read models. The live
projector, the rebuild and the audit replay all call it. It is pure: it reads the
state through `ReadState`, never writes it, and returns the new rows plus what the
event did (its effect), which the caller applies. It decides nothing: what an event's
outcome is, which events keep a generation fresh, when it becomes resumable and how
overrides change are the domain's rules (domain/policies.py), which the aggregate
follows too, here applied to the rows the log folded into so far.

The generation fence holds by construction: an event changes the generation row
of its own sessionId only, and the session row is a pointer that only
`generation.opened` and `session.deleted` move.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sessionledger.domain.events import (
    BindingDropped,
    BindingSet,
    GenerationOpened,
    GenerationPruned,
    LedgerEvent,
    OverridesChanged,
    RunEnded,
    RunErrored,
    RunStarted,
    SessionDeleted,
    SessionRotated,
    TranscriptAppended,
)
from sessionledger.domain.policies import (
    ended_status,
    last_interaction,
    merged_overrides,
    placement,
    resumable,
)
from sessionledger.domain.values import KeyShape
from sessionledger.projections.rows import (
    EntryRow,
    GenerationRow,
    ReceiptRow,
    RunRow,
    SessionRow,
    slot_builder,
    slot_evolver,
)

EffectKind = Literal["applied", "archived"]


class ReadState(Protocol):
    def session(self, session_key: str) -> SessionRow | None: ...

    def generation(self, session_id: str) -> GenerationRow | None: ...

    def run(self, run_id: str) -> RunRow | None: ...


@dataclass(frozen=True, slots=True)
class Effect:
    kind: EffectKind
    note: str


@dataclass(frozen=True, slots=True)
class Transition:
    effect: Effect
    receipt: ReceiptRow | None  # None when the caller folds without receipts
    session: SessionRow | None = None
    deleted_key: str | None = None
    generations: tuple[GenerationRow, ...] = ()
    run: RunRow | None = None
    entry: EntryRow | None = None
    pruned_session_id: str | None = None  # drop this generation's transcript rows


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def fold(
    state: ReadState, event: LedgerEvent, position: int, *, receipts: bool = True
) -> Transition:
    """What `event` at `position` does to the rows in `state`. With receipts=False the
    transition carries no receipt row (the audit shows none); every row is the same."""
    recorded = event.timestamp.astimezone(UTC)
    session_key = event.session_key
    session = state.session(session_key)
    if type(event) is GenerationOpened:
        return _opened(event, session, state, position, recorded, receipts)
    session_id = event.session_id
    generation = state.generation(session_id)
    if generation is None:
        raise LookupError(f"event at {position} names unknown generation {session_id!r}")
    current = placement(event, None if session is None else session.session_id) == "applied"
    effect = _APPLIED_TO_CURRENT if current else _archived(generation, recorded)
    # The generation row's changes, gathered and applied once: dataclasses.replace on a
    # 33-field frozen row cost more than the rest of the fold when chained per event.
    touched: dict[str, Any] = {
        "updated_at": recorded,
        "position": position,
        "late_events": generation.late_events + (0 if current else 1),
        "last_interaction_at": last_interaction(generation.last_interaction_at, event),
    }
    run: RunRow | None = None
    entry: EntryRow | None = None
    deleted_key: str | None = None
    pruned: str | None = None

    if type(event) is SessionRotated:
        touched.update(
            state="archived",
            archived_at=recorded,
            archive_reason=event.reason,
            next_session_id=event.to_session_id,
        )
        effect = Effect("applied", f"rotated to {event.to_session_id} ({event.reason})")
    elif type(event) is SessionDeleted:
        touched.update(
            state="deleted",
            archived_at=recorded,
            archive_reason="deleted",
        )
        deleted_key = event.session_key
        effect = Effect("applied", "deleted the session")
    elif type(event) is RunStarted:
        shape = KeyShape.parse(event.session_key)
        run = _run_row(
            run_id=event.run_id,
            session_key=event.session_key,
            session_id=event.session_id,
            agent=shape.agent,
            channel=shape.channel,
            status="running",
            trigger=event.trigger,
            writer=event.writer,
            model=event.model,
            provider=event.provider,
            started_at=utc(event.occurred_at),
            ended_at=None,
            runtime_ms=None,
            stop_reason=None,
            error=None,
            error_kind=None,
            input_tokens=0,
            output_tokens=0,
            cache_read_tokens=0,
            cache_write_tokens=0,
            late=not current,
            started_position=position,
            ended_position=None,
            updated_at=recorded,
        )
        touched.update(
            active_run_ids=(*generation.active_run_ids, event.run_id),
            model=event.model or generation.model,
            provider=event.provider or generation.provider,
        )
        touched.update(_focus(run))
    elif type(event) is RunEnded or type(event) is RunErrored:
        started = state.run(event.run_id)
        if started is None:
            raise LookupError(f"event at {position} ends unknown run {event.run_id!r}")
        # Identity decides, not clocks: a skewed end is clamped, never dropped.
        ended_at = max(utc(event.occurred_at), started.started_at)
        usage = event.usage
        run = _evolve_run(
            started,
            dict(
                status=ended_status(event),
                ended_at=ended_at,
                runtime_ms=_millis(ended_at - started.started_at),
                stop_reason=event.stop_reason if type(event) is RunEnded else None,
                error=event.error if type(event) is RunErrored else None,
                error_kind=event.error_kind if type(event) is RunErrored else None,
                input_tokens=usage.input,
                output_tokens=usage.output,
                cache_read_tokens=usage.cache_read,
                cache_write_tokens=usage.cache_write,
                late=started.late or not current,
                ended_position=position,
                updated_at=recorded,
            ),
        )
        still_active = tuple(r for r in generation.active_run_ids if r != event.run_id)
        touched.update(
            active_run_ids=still_active,
            input_tokens=generation.input_tokens + usage.input,
            output_tokens=generation.output_tokens + usage.output,
            cache_read_tokens=generation.cache_read_tokens + usage.cache_read,
            cache_write_tokens=generation.cache_write_tokens + usage.cache_write,
        )
        if still_active:
            focus = state.run(still_active[-1])
            assert focus is not None, still_active[-1]
            touched.update(_focus(focus))
        else:
            touched.update(_focus(run))
    elif type(event) is TranscriptAppended:
        item = event.entry
        seq, entry_hash, writer, role = event.seq, event.entry_hash, event.writer, item.role
        entry = _entry_row(
            session_id=session_id,
            seq=seq,
            entry_id=item.id,
            parent_id=item.parent_id,
            role=role,
            content=item.content,
            timestamp=item.timestamp.astimezone(UTC),
            writer=writer,
            run_id=event.run_id,
            entry_hash=entry_hash,
            position=position,
            recorded_at=recorded,
        )
        touched["entry_count"] = seq
        touched["head_hash"] = entry_hash
        touched["resumable"] = resumable(generation.resumable, role)
    elif type(event) is BindingSet:
        touched.update(bindings={**generation.bindings, event.provider: event.cli_session_id})
    elif type(event) is BindingDropped:
        touched.update(
            bindings={p: c for p, c in generation.bindings.items() if p != event.provider},
        )
    elif type(event) is OverridesChanged:
        touched.update(overrides=merged_overrides(generation.overrides, event.overrides))
    elif type(event) is GenerationPruned:
        # entry_count and head_hash stay: they describe the chain the log still holds.
        touched.update(pruned_at=recorded)
        pruned = event.session_id
        effect = Effect(
            "applied",
            f"pruned generation {event.session_id}: {event.entry_count} transcript entries "
            f"archived ({event.reason})",
        )

    current_session_id = None if deleted_key or session is None else session.session_id
    return _transition(
        effect=effect,
        receipt=_receipt(event, position, effect.kind, current_session_id, recorded)
        if receipts
        else None,
        session=None,
        deleted_key=deleted_key,
        generations=(_evolve(generation, touched),),
        run=run,
        entry=entry,
        pruned_session_id=pruned,
    )


def _opened(
    event: GenerationOpened,
    session: SessionRow | None,
    state: ReadState,
    position: int,
    recorded: datetime,
    receipts: bool,
) -> Transition:
    generation = _generation_row(
        session_id=event.session_id,
        session_key=event.session_key,
        previous_session_id=event.previous_session_id,
        next_session_id=None,
        open_reason=event.reason,
        state="current",
        opened_at=utc(event.occurred_at),
        opened_position=position,
        archived_at=None,
        archive_reason=None,
        status="new",
        active_run_ids=(),
        last_run_id=None,
        last_error=None,
        started_at=None,
        ended_at=None,
        runtime_ms=None,
        input_tokens=0,
        output_tokens=0,
        cache_read_tokens=0,
        cache_write_tokens=0,
        model=None,
        provider=None,
        last_interaction_at=None,
        entry_count=0,
        resumable=False,
        head_hash="",
        bindings=dict(event.bindings),
        overrides=dict(event.overrides),
        late_events=0,
        updated_at=recorded,
        position=position,
        pruned_at=None,
    )
    shape = KeyShape.parse(event.session_key)
    pointer = _session_row(
        session_key=event.session_key,
        session_id=event.session_id,
        agent=shape.agent,
        channel=shape.channel,
        kind=shape.kind,
        created_at=session.created_at if session else recorded,
        position=position,
    )
    note = (
        f"opened generation {event.session_id} after {event.previous_session_id} ({event.reason})"
        if event.previous_session_id
        else f"opened generation {event.session_id} ({event.reason})"
    )
    return _transition(
        effect=Effect("applied", note),
        receipt=_receipt(event, position, "applied", event.session_id, recorded)
        if receipts
        else None,
        session=pointer,
        deleted_key=None,
        generations=(generation,),
        run=None,
        entry=None,
        pruned_session_id=None,
    )


def _archived(generation: GenerationRow, recorded: datetime) -> Effect:
    """The effect of an event on a generation that is no longer current."""
    what = "the deletion" if generation.state == "deleted" else "the reset"
    delay = ""
    if generation.archived_at is not None:
        seconds = (recorded - generation.archived_at).total_seconds()
        delay = f" (arrived {seconds:.1f} s after {what})"
    return Effect("archived", f"applied to archived generation {generation.session_id}{delay}")


def _focus(run: RunRow) -> dict[str, Any]:
    """Status and run fields describe one run: the newest active one, else the last to end."""
    return {
        "status": run.status,
        "last_run_id": run.run_id,
        "last_error": run.error,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "runtime_ms": run.runtime_ms,
    }


# Rows are built through a plain twin of each class (projections/rows.py
# `slot_builder`): a frozen dataclass's __init__ routes every field through
# object.__setattr__, and the fold builds three or four rows per event.
_generation_row = slot_builder(GenerationRow)
_session_row = slot_builder(SessionRow)
_run_row = slot_builder(RunRow)
_entry_row = slot_builder(EntryRow)
_receipt_row = slot_builder(ReceiptRow)
_transition = slot_builder(Transition)
_APPLIED_TO_CURRENT = Effect("applied", "applied to current")


_evolve = slot_evolver(GenerationRow)
_evolve_run = slot_evolver(RunRow)


def _receipt(
    event: LedgerEvent,
    position: int,
    outcome: EffectKind,
    current_session_id: str | None,
    recorded: datetime,
) -> ReceiptRow:
    return _receipt_row(
        event_id=event.event_id,
        session_id=event.session_id,
        current_session_id=current_session_id,
        outcome=outcome,
        position=position,
        recorded_at=recorded,
    )


def _millis(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)
