"""Audit replay: one key's events in log order, each with what it did and the rows around it.

It replays the key's own events with the same fold as the live projection (a key's
events only ever touch that key's rows), so the audit cannot tell a different story
from the one the read models were built from. Stopping the replay at a position (or
at the last event recorded by a time) gives every row of the key as it stood then.

What the log cannot show: a retried eventId is answered from its receipt and a
rejected fact is refused before anything is recorded, so neither leaves an event
behind. The audit says so (`notes`) instead of guessing; what it can see is a
retry that came back with a *fresh* eventId (`possible-duplicate`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sessionledger.domain.events import LedgerEvent, RunEnded, RunErrored, TranscriptAppended
from sessionledger.domain.values import canonical_json
from sessionledger.projections.fold import EffectKind, utc
from sessionledger.projections.rows import (
    CAMEL,
    GenerationRow,
    RunRow,
    SessionRow,
    SessionView,
)
from sessionledger.projections.state import RowSet

# |recordedAt - occurredAt| beyond this is reported as clock skew (or a delivery delay).
# A minute: synchronised hosts agree to milliseconds and gateways flush batches within
# seconds, so anything past a minute is a clock or a queue someone should look at.
SKEW_THRESHOLD = timedelta(seconds=60)
# Two transcript entries with the same generation, role, writer and content reported
# within this interval look like one delivery retried under a fresh eventId.
DUPLICATE_WINDOW = timedelta(seconds=60)

AnomalyKind = Literal[
    "late-event", "run-never-ended", "clock-skew", "end-before-start", "possible-duplicate"
]
NOTES = (
    "Retried deliveries of the same eventId are answered from their receipt and rejected "
    "facts are refused before anything is recorded: neither is in the log, so neither "
    "appears here. A retry under a fresh eventId is recorded and flagged as a possible "
    "duplicate.",
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    __pydantic_config__ = CAMEL

    position: int
    event_id: str
    type: str
    session_key: str
    session_id: str
    run_id: str | None
    writer: str
    occurred_at: datetime
    recorded_at: datetime
    outcome: EffectKind
    did: str
    # the key's current row (the pointer joined with its current generation)
    before: SessionView | None
    after: SessionView | None
    # the generation the event touched (its own sessionId), and its run
    generation_before: GenerationRow | None
    generation_after: GenerationRow | None
    run_after: RunRow | None
    # late events: recordedAt and occurredAt measured from the rotation's recordedAt
    arrived_after_ms: int | None
    occurred_after_ms: int | None


@dataclass(frozen=True, slots=True)
class Anomaly:
    __pydantic_config__ = CAMEL

    kind: AnomalyKind
    message: str
    positions: list[int] = field(hash=False)
    session_id: str | None
    run_id: str | None


@dataclass(frozen=True, slots=True)
class GenerationSummary:
    __pydantic_config__ = CAMEL

    session_id: str
    state: str
    status: str
    open_reason: str
    opened_at: datetime
    archived_at: datetime | None
    archive_reason: str | None
    runs: int
    late_events: int


@dataclass(frozen=True, slots=True)
class AuditSummary:
    __pydantic_config__ = CAMEL

    events: int
    first_recorded_at: datetime | None
    last_recorded_at: datetime | None
    current_session_id: str | None
    deleted: bool
    generations: list[GenerationSummary] = field(hash=False)
    runs: dict[str, int] = field(hash=False)  # by status
    outcomes: dict[str, int] = field(hash=False)  # applied / archived
    anomalies: dict[str, int] = field(hash=False)  # by kind


@dataclass(frozen=True, slots=True)
class AuditState:
    """Every row of the key as it stood at the end of the replay."""

    __pydantic_config__ = CAMEL

    session: SessionView | None
    generations: list[GenerationRow] = field(hash=False)
    runs: list[RunRow] = field(hash=False)


@dataclass(frozen=True, slots=True)
class AuditReport:
    __pydantic_config__ = CAMEL

    session_key: str
    run_id: str | None
    as_of: datetime | None
    position: int | None
    through_position: int | None  # the last event replayed
    skew_threshold_ms: int
    summary: AuditSummary
    entries: list[AuditEntry] = field(hash=False)
    anomalies: list[Anomaly] = field(hash=False)
    state: AuditState
    notes: list[str] = field(hash=False)


def current_view(rows: RowSet, session_key: str) -> SessionView | None:
    pointer = rows.session(session_key)
    if pointer is None:
        return None
    generation = rows.generation(pointer.session_id)
    assert generation is not None
    return SessionView.of(pointer, generation)


class _Views:
    """current_view, built again only when the pointer or its generation row changed.

    Rows are immutable and the fold replaces the ones it changes, so the same two
    objects mean the same view: one event's `after` is the next one's `before`, and an
    event on an archived generation leaves the view as it was (building a view was a
    fifth of an audit)."""

    def __init__(self, rows: RowSet) -> None:
        self.rows = rows
        self._built: tuple[SessionRow, GenerationRow, SessionView] | None = None

    def current(self, session_key: str) -> SessionView | None:
        pointer = self.rows.session(session_key)
        if pointer is None:
            return None
        generation = self.rows.generation(pointer.session_id)
        assert generation is not None
        built = self._built
        if built is not None and built[0] is pointer and built[1] is generation:
            return built[2]
        view = SessionView.of(pointer, generation)
        self._built = (pointer, generation, view)
        return view


def bounded(
    log: Iterable[tuple[int, LedgerEvent]],
    *,
    as_of: datetime | None = None,
    position: int | None = None,
) -> list[tuple[int, LedgerEvent]]:
    """The prefix of a key's log up to a position, or up to the last event recorded by
    `as_of` (a prefix in log order, so the fold sees what it saw live)."""
    kept: list[tuple[int, LedgerEvent]] = []
    for at, event in log:
        if position is not None and at > position:
            break
        if as_of is not None and utc(event.timestamp) > utc(as_of):
            break
        kept.append((at, event))
    return kept


def audit(
    log: Iterable[tuple[int, LedgerEvent]], *, skew_threshold: timedelta = SKEW_THRESHOLD
) -> tuple[list[AuditEntry], RowSet, list[Anomaly]]:
    """Replay one key's events (in log order): what each did, the rows, the anomalies."""
    rows = RowSet(receipts=False)  # an audit shows no receipts
    views = _Views(rows)
    entries: list[AuditEntry] = []
    anomalies: list[Anomaly] = []
    skew: dict[str, list[tuple[int, timedelta]]] = defaultdict(list)
    seen_entries: dict[tuple[str, str, str, bytes], tuple[str, datetime]] = {}
    for position, event in log:
        before = views.current(event.session_key)
        generation_before = rows.generation(event.session_id)
        run_before = rows.run(event.run_id) if event.run_id is not None else None
        transition = rows.apply(event, position)
        recorded, occurred = utc(event.timestamp), utc(event.occurred_at)
        did = transition.effect.note
        arrived_ms = occurred_ms = None
        if (
            transition.effect.kind == "archived"
            and generation_before is not None
            and generation_before.archived_at is not None
        ):
            archived_at = generation_before.archived_at
            arrived_ms, occurred_ms = _ms(recorded - archived_at), _ms(occurred - archived_at)
            did = _late_note(generation_before, recorded - archived_at, occurred - archived_at)
            anomalies.append(
                Anomaly(
                    "late-event", f"{event.type} {did}", [position], event.session_id, event.run_id
                )
            )
        if abs(recorded - occurred) > skew_threshold:
            skew[event.writer].append((position, occurred - recorded))
        if (
            isinstance(event, (RunEnded, RunErrored))
            and run_before is not None
            and occurred < run_before.started_at
        ):
            anomalies.append(
                Anomaly(
                    "end-before-start",
                    f"{event.type} of run {event.run_id} was reported "
                    f"{human(run_before.started_at - occurred)} before the run started "
                    "(by the reporter's clock); its end was clamped to the start, runtime 0",
                    [position],
                    event.session_id,
                    event.run_id,
                )
            )
        if isinstance(event, TranscriptAppended):
            item = event.entry
            fingerprint = (event.session_id, item.role, event.writer, canonical_json(item.content))
            earlier = seen_entries.get(fingerprint)
            if earlier is not None and abs(occurred - earlier[1]) <= DUPLICATE_WINDOW:
                anomalies.append(
                    Anomaly(
                        "possible-duplicate",
                        f"transcript entry {item.id} repeats entry {earlier[0]} (same role, "
                        f"writer and content, reported {human(abs(occurred - earlier[1]))} "
                        "apart): a delivery retried under a fresh eventId?",
                        [position],
                        event.session_id,
                        event.run_id,
                    )
                )
            seen_entries[fingerprint] = (item.id, occurred)
        entries.append(
            AuditEntry(
                position=position,
                event_id=event.event_id,
                type=event.type,
                session_key=event.session_key,
                session_id=event.session_id,
                run_id=event.run_id,
                writer=event.writer,
                occurred_at=event.occurred_at,
                recorded_at=event.timestamp,
                outcome=transition.effect.kind,
                did=did,
                before=before,
                after=views.current(event.session_key),
                generation_before=generation_before,
                generation_after=rows.generation(event.session_id),
                run_after=rows.run(event.run_id) if event.run_id is not None else None,
                arrived_after_ms=arrived_ms,
                occurred_after_ms=occurred_ms,
            )
        )
    for writer, found in sorted(skew.items()):
        offsets = sorted(offset for _, offset in found)
        anomalies.append(
            Anomaly(
                "clock-skew",
                f"{len(found)} event(s) by {writer} differ from the store's clock by more "
                f"than {human(skew_threshold)}: occurredAt - recordedAt from "
                f"{signed(offsets[0])} to {signed(offsets[-1])} "
                + (
                    "(reporter clock behind, or delivered late)"
                    if offsets[-1] < timedelta(0)
                    else "(reporter clock ahead)"
                    if offsets[0] > timedelta(0)
                    else "(both ways)"
                ),
                [position for position, _ in found],
                None,
                None,
            )
        )
    last = entries[-1].position if entries else None
    for run in sorted(_runs(rows), key=lambda r: r.started_position):
        if run.status == "running":
            generation = rows.generation(run.session_id)
            where = (
                "its current generation"
                if generation is not None and generation.state == "current"
                else f"{generation.state if generation else 'unknown'} generation {run.session_id}"
            )
            anomalies.append(
                Anomaly(
                    "run-never-ended",
                    f"run {run.run_id} ({run.trigger}, started {run.started_at.isoformat()}) "
                    f"in {where} has no end or error as of position {last}",
                    [run.started_position],
                    run.session_id,
                    run.run_id,
                )
            )
    return entries, rows, anomalies


def report(
    session_key: str,
    log: Iterable[tuple[int, LedgerEvent]],
    *,
    run_id: str | None = None,
    as_of: datetime | None = None,
    position: int | None = None,
    skew_threshold: timedelta = SKEW_THRESHOLD,
) -> AuditReport:
    """The audit of one key (or one run of it), as of a time or position if given."""
    entries, rows, anomalies = audit(
        bounded(log, as_of=as_of, position=position), skew_threshold=skew_threshold
    )
    through = entries[-1].position if entries else None
    generations = sorted(
        (g for g in rows.generations.rows.values() if g is not None),
        key=lambda g: g.opened_position,
    )
    runs = sorted(_runs(rows), key=lambda r: r.started_position)
    if run_id is not None:
        entries = [e for e in entries if e.run_id == run_id]
        run_positions = {e.position for e in entries}
        anomalies = [
            a
            for a in anomalies
            if a.run_id == run_id or (a.kind == "clock-skew" and run_positions & set(a.positions))
        ]
        runs = [r for r in runs if r.run_id == run_id]
        generations = [g for g in generations if any(g.session_id == r.session_id for r in runs)]
    pointer = rows.sessions.rows.get(session_key)
    deleted = pointer is None and any(g.state == "deleted" for g in generations)
    summary = AuditSummary(
        events=len(entries),
        first_recorded_at=entries[0].recorded_at if entries else None,
        last_recorded_at=entries[-1].recorded_at if entries else None,
        current_session_id=pointer.session_id if pointer else None,
        deleted=deleted,
        generations=[
            GenerationSummary(
                session_id=g.session_id,
                state=g.state,
                status=g.status,
                open_reason=g.open_reason,
                opened_at=g.opened_at,
                archived_at=g.archived_at,
                archive_reason=g.archive_reason,
                runs=sum(1 for r in runs if r.session_id == g.session_id),
                late_events=g.late_events,
            )
            for g in generations
        ],
        runs=dict(Counter(r.status for r in runs)),
        outcomes=dict(Counter(e.outcome for e in entries)),
        anomalies=dict(Counter(a.kind for a in anomalies)),
    )
    return AuditReport(
        session_key=session_key,
        run_id=run_id,
        as_of=as_of,
        position=position,
        through_position=through,
        skew_threshold_ms=_ms(skew_threshold),
        summary=summary,
        entries=entries,
        anomalies=anomalies,
        state=AuditState(
            session=current_view(rows, session_key) if run_id is None else None,
            generations=generations,
            runs=runs,
        ),
        notes=list(NOTES),
    )


def _runs(rows: RowSet) -> list[RunRow]:
    return [r for r in rows.runs.rows.values() if r is not None]


def _late_note(generation: GenerationRow, arrived: timedelta, occurred: timedelta) -> str:
    what = (
        "the deletion"
        if generation.state == "deleted"
        else "the rollover"
        if generation.archive_reason in ("idle", "daily")
        else "the reset"
    )
    happened = (
        f"it happened {human(-occurred)} before {what}"
        if occurred < timedelta(0)
        else f"it happened {human(occurred)} after {what}"
    )
    return (
        f"applied to archived generation {generation.session_id} "
        f"(arrived {human(arrived)} after {what}; by the reporter's clock {happened})"
    )


def _ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


def human(delta: timedelta) -> str:
    """4.2 s, 3 min 12 s, 2 h 5 min, 1 d 3 h (the magnitude; callers say which way)."""
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def signed(delta: timedelta) -> str:
    return ("-" if delta < timedelta(0) else "+") + human(delta)


# -- the incident export -----------------------------------------------------------------


def to_markdown(audit_report: AuditReport) -> str:
    """An incident report a person can paste into a ticket."""
    r, s = audit_report, audit_report.summary
    subject = f"run `{r.run_id}` of `{r.session_key}`" if r.run_id else f"`{r.session_key}`"
    lines = [f"# Incident report: {subject}", ""]
    bound = (
        f"as of position {r.position}"
        if r.position is not None
        else f"as of {r.as_of.isoformat()}"
        if r.as_of is not None
        else "the key's whole log"
    )
    lines += [f"Replayed {bound} (through position {r.through_position}).", "", "## Summary", ""]
    where = (
        "deleted"
        if s.deleted
        else f"current generation `{s.current_session_id}`"
        if s.current_session_id
        else "no current generation"
    )
    lines.append(f"- **Key**: `{r.session_key}`, {where}")
    lines.append(
        f"- **Generations**: {len(s.generations)}"
        + (
            " — " + ", ".join(f"`{g.session_id}` {g.state}" for g in s.generations)
            if s.generations
            else ""
        )
    )
    lines.append(f"- **Runs**: {sum(s.runs.values())}" + _counts(s.runs))
    lines.append(f"- **Events**: {s.events}" + _counts(s.outcomes))
    if s.first_recorded_at and s.last_recorded_at:
        lines.append(
            f"- **Recorded**: {s.first_recorded_at.isoformat()} to {s.last_recorded_at.isoformat()}"
        )
    lines.append(f"- **Anomalies found**: {sum(s.anomalies.values())}" + _counts(s.anomalies))
    lines += ["", "### Generations", ""]
    lines += _table(
        [
            "sessionId",
            "state",
            "status",
            "opened",
            "reason",
            "archived",
            "reason",
            "runs",
            "late events",
        ],
        [
            [
                g.session_id,
                g.state,
                g.status,
                _t(g.opened_at),
                g.open_reason,
                _t(g.archived_at),
                g.archive_reason or "-",
                str(g.runs),
                str(g.late_events),
            ]
            for g in s.generations
        ],
    )
    lines += ["", "## Anomalies", ""]
    if r.anomalies:
        for a in r.anomalies:
            at = ", ".join(str(p) for p in a.positions[:10])
            more = f" and {len(a.positions) - 10} more" if len(a.positions) > 10 else ""
            lines.append(f"- **{a.kind}** (position {at}{more}): {_inline(a.message)}")
    else:
        lines.append("None found.")
    lines += ["", "## Timeline", ""]
    lines += _table(
        ["pos", "recordedAt", "occurredAt", "type", "sessionId", "runId", "writer", "did"],
        [
            [
                str(e.position),
                _t(e.recorded_at),
                _t(e.occurred_at),
                e.type,
                e.session_id,
                e.run_id or "-",
                e.writer,
                e.did,
            ]
            for e in r.entries
        ],
    )
    lines += ["", f"## Rows as of position {r.through_position}", ""]
    if r.state.session is not None:
        v = r.state.session
        lines += _table(
            ["field", "value"],
            [
                ["sessionId", v.session_id],
                ["status", v.status],
                ["activeRunIds", ", ".join(v.active_run_ids) or "-"],
                ["lastRunId", v.last_run_id or "-"],
                ["lastError", v.last_error or "-"],
                ["startedAt / endedAt", f"{_t(v.started_at)} / {_t(v.ended_at)}"],
                ["tokens in/out", f"{v.input_tokens}/{v.output_tokens}"],
                ["entries / resumable", f"{v.entry_count} / {v.resumable}"],
                ["previousSessionId", v.previous_session_id or "-"],
            ],
        )
        lines.append("")
    lines += _table(
        [
            "runId",
            "sessionId",
            "status",
            "trigger",
            "started",
            "ended",
            "runtime",
            "tokens in/out",
            "late",
            "error",
        ],
        [
            [
                run.run_id,
                run.session_id,
                run.status,
                run.trigger,
                _t(run.started_at),
                _t(run.ended_at),
                "-" if run.runtime_ms is None else f"{run.runtime_ms} ms",
                f"{run.input_tokens}/{run.output_tokens}",
                "yes" if run.late else "",
                run.error or "-",
            ]
            for run in r.state.runs
        ],
    )
    lines += ["", "## Notes", ""]
    lines.append(
        f"- Clock skew threshold: {human(timedelta(milliseconds=r.skew_threshold_ms))} "
        "between an event's occurredAt (the reporter's clock) and its recordedAt (the store's)."
    )
    lines += [f"- {note}" for note in r.notes]
    return "\n".join(lines) + "\n"


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    return " — " + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))


def _t(moment: datetime | None) -> str:
    return utc(moment).isoformat(timespec="milliseconds") if moment else "-"


def _inline(text: Any) -> str:
    return str(text).replace("\n", " ").replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(none)"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_inline(cell) for cell in row) + " |" for row in rows]
    return out
