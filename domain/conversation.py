"""The Conversation aggregate: one per sessionKey, the only place that decides.

It holds the generation pointer, each generation's runs and transcript chain head
(entry ids with their digests, last hash), bindings, overrides and the tombstone.
Transcript content lives in events, never here. Every state change is an event
applied by `evolve`, the same function that rebuilds the aggregate from its history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, cast, get_args
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.utils import get_topic

from sessionledger.domain.errors import InvalidEvent, SessionChanged, SessionDeleted
from sessionledger.domain.events import (
    GENESIS_HASH,
    BindingDropped,
    BindingDroppedFact,
    BindingSet,
    BindingSetFact,
    ConversationSnapshot,
    Fact,
    GenerationOpened,
    GenerationPruned,
    InteractionRecorded,
    LedgerEvent,
    OverridesChanged,
    OverridesChangedFact,
    Recorded,
    RunEnded,
    RunEndedFact,
    RunErrored,
    RunErroredFact,
    RunStarted,
    RunStartedFact,
    SessionRotated,
    TranscriptAppended,
    TranscriptAppendedFact,
    chain_hash,
)
from sessionledger.domain.events import (
    SessionDeleted as SessionDeletedEvent,
)
from sessionledger.domain.policies import (
    FreshnessPolicy,
    archive_reason,
    ended_status,
    last_interaction,
    merged_overrides,
    placement,
    resumable,
)
from sessionledger.domain.values import SOFT_REASONS, Interaction, ResetReason, Writer

Outcome = Literal["applied", "archived", "duplicate", "rejected"]
RUNNING = "running"
KEY_NAMESPACE = uuid5(NAMESPACE_URL, "sessionledger:sessionKey")
# Hex digits of an entry's content digest a generation remembers: 128 bits tell a retried
# append from a reused entry id with other content as surely as all 256 do, and a
# snapshot holds every remembered digest, so they are half its bytes (the hash chain
# still links the full digests; they live in the events).
REMEMBERED_DIGITS = 32


def conversation_id(session_key: str) -> UUID:
    return uuid5(KEY_NAMESPACE, session_key)


def new_id() -> str:
    return uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Decision(NamedTuple):
    """What the aggregate did with one fact: the one place its outcome is decided (the
    fold places the recorded event by the same rule, `policies.placement`). `reason`
    says why it was rejected or a duplicate, or, archived, whether the key rotated or
    was deleted. (A named tuple: a frozen dataclass's __init__ costs twice as much, and
    a batch decides a thousand facts.)"""

    outcome: Outcome
    session_id: str | None
    current_session_id: str | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    session_id: str
    rotated: bool
    reason: str | None
    previous_session_id: str | None


@dataclass(slots=True)
class Generation:
    session_id: str
    previous_session_id: str | None
    opened_at: datetime
    last_interaction_at: datetime | None = None
    runs: dict[str, str] = field(default_factory=dict)  # runId -> "running" | terminal status
    # entryId -> the content digest's first REMEMBERED_DIGITS
    entries: dict[str, str] = field(default_factory=dict)
    head: str = GENESIS_HASH
    resumable: bool = False
    bindings: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    pruned: bool = False  # maintenance archived it: entries freed, nothing more recorded

    def to_state(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "previous_session_id": self.previous_session_id,
            "opened_at": self.opened_at.isoformat(),
            "last_interaction_at": self.last_interaction_at.isoformat()
            if self.last_interaction_at
            else None,
            "runs": self.runs,
            "entries": self.entries,
            "head": self.head,
            "resumable": self.resumable,
            "bindings": self.bindings,
            "overrides": self.overrides,
            "pruned": self.pruned,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Generation:
        last = state["last_interaction_at"]
        return cls(
            session_id=state["session_id"],
            previous_session_id=state["previous_session_id"],
            opened_at=datetime.fromisoformat(state["opened_at"]),
            last_interaction_at=datetime.fromisoformat(last) if last else None,
            runs=dict(state["runs"]),
            entries=_remembered(state["entries"]),
            head=state["head"],
            resumable=state["resumable"],
            bindings=dict(state["bindings"]),
            overrides=dict(state["overrides"]),
            pruned=state.get("pruned", False),  # snapshots from before pruning existed
        )


def _remembered(entries: dict[str, str]) -> dict[str, str]:
    """A snapshot's entry digests as a generation remembers them (snapshots taken before
    REMEMBERED_DIGITS hold whole digests)."""
    if any(len(digest) > REMEMBERED_DIGITS for digest in entries.values()):
        return {entry_id: digest[:REMEMBERED_DIGITS] for entry_id, digest in entries.items()}
    return dict(entries)


class Conversation:
    """Aggregate root for one sessionKey (id = uuid5 of the key)."""

    def __init__(self, id: UUID, session_key: str) -> None:
        self.id = id
        self.version = 0
        self.session_key = session_key
        self.current_session_id: str | None = None
        self.deleted = False
        self.last_session_id: str | None = None
        self.generations: dict[str, Generation] = {}
        self.run_owner: dict[str, str] = {}  # runId -> sessionId, across the lineage
        self._pending: list[Recorded] = []

    # -- construction ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        session_key: str,
        *,
        at: datetime,
        writer: Writer,
        session_id: str | None = None,
    ) -> Conversation:
        """First use of a key: open its first generation."""
        conversation = cls(conversation_id(session_key), session_key)
        conversation._open_generation(session_id or new_id(), at, writer, "new", None, {}, {})
        return conversation

    # -- commands ------------------------------------------------------------------------

    def record(self, fact: Fact, recorded_at: datetime | None = None) -> Decision:
        """Decide one reported fact. Rejections record nothing and say which field is wrong.

        `recorded_at`: the store's clock for the event (now if not given). A unit of work
        passes one moment for all the facts it records: they are recorded together."""
        if recorded_at is None:
            recorded_at = utcnow()
        generation = self.generations.get(fact.session_id)
        if generation is None:
            return self._reject(
                fact, "sessionId", f"{fact.session_id!r} is not a generation of this session"
            )
        if generation.pruned:
            return self._reject(
                fact, "sessionId", f"generation {fact.session_id!r} was pruned by maintenance"
            )
        if isinstance(fact, TranscriptAppendedFact):  # first: most of what reporters send
            return self._append_entry(fact, generation, recorded_at)
        if isinstance(fact, RunStartedFact):
            return self._start_run(fact, recorded_at)
        if isinstance(fact, (RunEndedFact, RunErroredFact)):
            return self._finish_run(fact, generation, recorded_at)
        if isinstance(fact, BindingSetFact):
            return self._accept(fact, BindingSet, recorded_at)
        if isinstance(fact, BindingDroppedFact):
            if fact.provider not in generation.bindings:
                return self._reject(fact, "provider", f"no binding for provider {fact.provider!r}")
            return self._accept(fact, BindingDropped, recorded_at)
        if isinstance(fact, OverridesChangedFact):
            return self._accept(fact, OverridesChanged, recorded_at)
        return self._reject(fact, "type", f"{fact.type!r} cannot be reported in a batch")

    def resolve(
        self,
        *,
        now: datetime,
        interaction: Interaction,
        policy: FreshnessPolicy,
        new_session_id: str | None = None,
    ) -> Resolution:
        """An inbound message: rotate if the policy says the generation expired.

        Only user interactions count: heartbeat, cron and system traffic neither
        keeps a session fresh nor rotates it (docs/invariants.md, rule 11).
        """
        writer: Writer = "ingress" if interaction == "user" else interaction
        if self.current_session_id is None:
            if interaction != "user":
                raise SessionDeleted(self.session_key, self.last_session_id)
            # An explicit new conversation on a deleted key; late writers never get here.
            session_id = self._checked_new_id(new_session_id)
            self._open_generation(session_id, now, writer, "new", None, {}, {})
            self._note_interaction(now, interaction)
            return Resolution(session_id, True, "new", None)
        if interaction != "user":
            return Resolution(self.current_session_id, False, None, None)
        current = self.generations[self.current_session_id]
        expired = policy.expiry(
            opened_at=current.opened_at, last_interaction_at=current.last_interaction_at, now=now
        )
        previous = None
        if expired is not None:
            previous = current.session_id
            self._rotate(expired, self._checked_new_id(new_session_id), now, writer)
        self._note_interaction(now, interaction)
        assert self.current_session_id is not None
        return Resolution(self.current_session_id, expired is not None, expired, previous)

    def reset(
        self,
        *,
        reason: ResetReason,
        at: datetime,
        writer: Writer = "admin",
        expected_session_id: str | None = None,
        new_session_id: str | None = None,
    ) -> tuple[str, str]:
        """Rotate the key to a new generation; returns (previous, new) sessionIds."""
        previous = self._expect(expected_session_id)
        new = self._checked_new_id(new_session_id)
        self._rotate(reason, new, at, writer)
        return previous, new

    def delete(
        self,
        *,
        at: datetime,
        writer: Writer = "admin",
        expected_session_id: str | None = None,
        reason: str | None = None,
    ) -> str:
        """Tombstone the key; returns the sessionId that was current."""
        current = self._expect(expected_session_id)
        self._trigger(
            SessionDeletedEvent,
            event_id=new_id(),
            session_key=self.session_key,
            session_id=current,
            occurred_at=at,
            writer=writer,
            reason=reason,
        )
        return current

    def prune(
        self, session_id: str, *, at: datetime, reason: str, writer: Writer = "system"
    ) -> str:
        """Archive an old generation (maintenance); returns why it cannot be, or "".

        Never the current generation, never one with a running run (maintenance
        must not prune a session that is still running), never twice.
        """
        generation = self.generations.get(session_id)
        if generation is None:
            return f"{session_id!r} is not a generation of this session"
        if generation.pruned:
            return f"generation {session_id!r} is already pruned"
        if session_id == self.current_session_id:
            return f"generation {session_id!r} is current"
        running = sorted(run for run, status in generation.runs.items() if status == RUNNING)
        if running:
            return f"generation {session_id!r} has running runs: {', '.join(running)}"
        self._trigger(
            GenerationPruned,
            event_id=new_id(),
            session_key=self.session_key,
            session_id=session_id,
            occurred_at=at,
            writer=writer,
            entry_count=len(generation.entries),
            head_hash=generation.head,
            reason=reason,
        )
        return ""

    # -- decisions -----------------------------------------------------------------------

    def _start_run(self, fact: RunStartedFact, recorded_at: datetime) -> Decision:
        owner = self.run_owner.get(fact.run_id)
        if owner is not None:
            return self._reject(
                fact, "runId", f"run {fact.run_id!r} was already started in generation {owner!r}"
            )
        return self._accept(fact, RunStarted, recorded_at)

    def _finish_run(
        self, fact: RunEndedFact | RunErroredFact, generation: Generation, recorded_at: datetime
    ) -> Decision:
        assert fact.run_id is not None
        owner = self.run_owner.get(fact.run_id)
        if owner is None:
            return self._reject(fact, "runId", f"run {fact.run_id!r} was never started")
        if owner != fact.session_id:
            return self._reject(
                fact, "sessionId", f"run {fact.run_id!r} belongs to generation {owner!r}"
            )
        status = generation.runs[fact.run_id]
        if status != RUNNING:
            return self._reject(fact, "runId", f"run {fact.run_id!r} already ended ({status})")
        event_class = RunEnded if isinstance(fact, RunEndedFact) else RunErrored
        return self._accept(fact, event_class, recorded_at)

    def _append_entry(
        self, fact: TranscriptAppendedFact, generation: Generation, recorded_at: datetime
    ) -> Decision:
        entry = fact.entry
        entry_id = entry.id
        entry_digest = fact.entry_digest()
        entries = generation.entries
        known = entries.get(entry_id)
        if known == entry_digest[:REMEMBERED_DIGITS]:
            # A retried append under a new eventId: the entry is already there.
            return Decision(
                "duplicate",
                fact.session_id,
                self.current_session_id,
                f"entry {entry_id!r} is already in generation {fact.session_id!r}",
            )
        if known is not None:
            return self._reject(
                fact,
                "entry.id",
                f"{entry_id!r} is already used in this generation with other content",
            )
        parent_id = entry.parent_id
        if parent_id is not None and parent_id not in entries:
            return self._reject(
                fact,
                "entry.parentId",
                f"no entry {parent_id!r} in generation {fact.session_id!r}",
            )
        head = generation.head
        return self._accept(
            fact,
            TranscriptAppended,
            recorded_at,
            seq=len(entries) + 1,
            prev_hash=head,
            entry_hash=chain_hash(head, entry_digest),
        )

    def _accept(
        self,
        fact: Fact,
        event_class: type[Recorded],
        recorded_at: datetime,
        **derived: int | str,
    ) -> Decision:
        # The fact was validated at the edge: its event is built without validating again.
        event = event_class.from_fact(
            fact,
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=recorded_at,
            **derived,
        )
        evolve(self, event)  # type: ignore[arg-type]
        self._pending.append(event)
        current = self.current_session_id
        # A reported fact never moves the pointer: where it was is where it is.
        outcome = placement(event, current)  # type: ignore[arg-type]
        reason = archive_reason(current) if outcome == "archived" else None
        return Decision(outcome, fact.session_id, current, reason)

    def _reject(self, fact: Fact, field_name: str, message: str) -> Decision:
        return Decision(
            "rejected", fact.session_id, self.current_session_id, f"{field_name}: {message}"
        )

    def _expect(self, expected_session_id: str | None) -> str:
        if self.current_session_id is None:
            raise SessionDeleted(self.session_key, self.last_session_id)
        if expected_session_id is not None and expected_session_id != self.current_session_id:
            raise SessionChanged(self.session_key, expected_session_id, self.current_session_id)
        return self.current_session_id

    def _checked_new_id(self, session_id: str | None) -> str:
        if session_id is None:
            return new_id()
        if session_id in self.generations:
            raise InvalidEvent("sessionId", f"{session_id!r} was already used by this session")
        return session_id

    def _rotate(
        self, reason: ResetReason, new_session_id: str, at: datetime, writer: Writer
    ) -> None:
        assert self.current_session_id is not None
        old = self.generations[self.current_session_id]
        bindings: dict[str, str] = {}
        overrides: dict[str, Any] = {}
        if reason in SOFT_REASONS:
            bindings, overrides = dict(old.bindings), dict(old.overrides)
        carried = [f"binding:{p}" for p in sorted(bindings)] + [
            f"override:{k}" for k in sorted(overrides)
        ]
        self._trigger(
            SessionRotated,
            event_id=new_id(),
            session_key=self.session_key,
            session_id=old.session_id,
            occurred_at=at,
            writer=writer,
            to_session_id=new_session_id,
            reason=reason,
            carried=carried,
        )
        self._open_generation(
            new_session_id, at, writer, reason, old.session_id, bindings, overrides
        )

    def _open_generation(
        self,
        session_id: str,
        at: datetime,
        writer: Writer,
        reason: ResetReason,
        previous: str | None,
        bindings: dict[str, str],
        overrides: dict[str, Any],
    ) -> None:
        self._trigger(
            GenerationOpened,
            event_id=new_id(),
            session_key=self.session_key,
            session_id=session_id,
            occurred_at=at,
            writer=writer,
            previous_session_id=previous,
            reason=reason,
            bindings=bindings,
            overrides=overrides,
        )

    def _note_interaction(self, at: datetime, interaction: Interaction) -> None:
        assert self.current_session_id is not None
        self._trigger(
            InteractionRecorded,
            event_id=new_id(),
            session_key=self.session_key,
            session_id=self.current_session_id,
            occurred_at=at,
            writer="ingress",
            interaction=interaction,
        )

    # -- event plumbing ------------------------------------------------------------------

    def _trigger(self, event_class: type[Recorded], **fields: Any) -> None:
        self._apply(
            event_class(
                originator_id=self.id,
                originator_version=self.version + 1,
                timestamp=utcnow(),
                **fields,
            )
        )

    def _apply(self, event: Recorded) -> None:
        evolve(self, event)  # type: ignore[arg-type]
        self._pending.append(event)

    def collect_events(self) -> list[Recorded]:
        events, self._pending = self._pending, []
        return events

    def to_state(self) -> dict[str, Any]:
        return {
            "session_key": self.session_key,
            "current_session_id": self.current_session_id,
            "deleted": self.deleted,
            "last_session_id": self.last_session_id,
            "generations": {sid: g.to_state() for sid, g in self.generations.items()},
            "run_owner": self.run_owner,
        }

    def take_snapshot(self) -> ConversationSnapshot:
        return ConversationSnapshot(
            originator_id=self.id,
            originator_version=self.version,
            timestamp=utcnow(),
            topic=get_topic(type(self)),
            state=self.to_state(),
        )

    @classmethod
    def from_snapshot(cls, snapshot: ConversationSnapshot) -> Conversation:
        state = snapshot.state
        conversation = cls(snapshot.originator_id, state["session_key"])
        conversation.version = snapshot.originator_version
        conversation.current_session_id = state["current_session_id"]
        conversation.deleted = state["deleted"]
        conversation.last_session_id = state["last_session_id"]
        conversation.generations = {
            sid: Generation.from_state(g) for sid, g in state["generations"].items()
        }
        conversation.run_owner = dict(state["run_owner"])
        return conversation


def evolve(
    conversation: Conversation | None, event: LedgerEvent | ConversationSnapshot
) -> Conversation:
    """Apply one event to the aggregate (the mutator of the library's projector function)."""
    # A ledger event's exact class first: isinstance on a pydantic class goes through its
    # metaclass (~70 ns a miss), and nearly every event folded is not a snapshot.
    if type(event) not in _LEDGER_EVENT_CLASSES and isinstance(event, ConversationSnapshot):
        return Conversation.from_snapshot(event)
    event = cast(LedgerEvent, event)  # what the check above let through
    if conversation is None:
        conversation = Conversation(event.originator_id, event.session_key)
    version = event.originator_version
    if version != conversation.version + 1:
        raise ValueError(f"event version {version} does not follow {conversation.version}")
    conversation.version = version
    sid = event.session_id
    if type(event) is GenerationOpened:
        conversation.generations[sid] = Generation(
            session_id=sid,
            previous_session_id=event.previous_session_id,
            opened_at=event.occurred_at,
            bindings=dict(event.bindings),
            overrides=dict(event.overrides),
        )
        conversation.current_session_id = sid
        conversation.last_session_id = sid
        conversation.deleted = False
        return conversation
    generation = conversation.generations[sid]
    generation.last_interaction_at = last_interaction(generation.last_interaction_at, event)
    if type(event) is TranscriptAppended:  # first: most of what a key's log holds
        entry = event.entry
        generation.entries[entry.id] = entry.digest()[:REMEMBERED_DIGITS]
        generation.head = event.entry_hash
        generation.resumable = resumable(generation.resumable, entry.role)
    elif type(event) is SessionRotated:
        conversation.current_session_id = None  # the GenerationOpened that follows sets it
    elif type(event) is SessionDeletedEvent:
        conversation.current_session_id = None
        conversation.deleted = True
    elif type(event) is RunStarted:
        generation.runs[event.run_id] = RUNNING
        conversation.run_owner[event.run_id] = sid
    elif type(event) is RunEnded or type(event) is RunErrored:
        generation.runs[event.run_id] = ended_status(event)
    elif type(event) is BindingSet:
        generation.bindings[event.provider] = event.cli_session_id
    elif type(event) is BindingDropped:
        generation.bindings.pop(event.provider, None)
    elif type(event) is OverridesChanged:
        generation.overrides = merged_overrides(generation.overrides, event.overrides)
    elif type(event) is GenerationPruned:
        generation.pruned = True
        generation.entries = {}  # the per-entry state pruning frees; the head stays
    return conversation


# The classes `evolve` folds as events (exact types: none of them is a snapshot).
_LEDGER_EVENT_CLASSES: frozenset[type] = frozenset(get_args(LedgerEvent))


def project_conversation(
    conversation: Conversation | None, events: Iterable[LedgerEvent | ConversationSnapshot]
) -> Conversation | None:
    """The library's projector function: fold a snapshot and events into the aggregate."""
    for event in events:
        conversation = evolve(conversation, event)
    return conversation
