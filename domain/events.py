"""The event vocabulary.

Two layers, one set of fields:
- a *fact* is what a reporter tells the store (validated at the edge, camelCase JSON);
- a *recorded event* is that fact once the aggregate accepted it: the same fields plus
  the library's originator id/version and the store's `timestamp` (recordedAt).

Recorded events are immutable pydantic models and versioned with the library's
`class_version` / `upcast_vN_vN+1` convention (see infrastructure.mapper).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Self, Union
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    NonNegativeInt,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sessionledger.domain.values import (
    MAX_ENTRY_BYTES,
    Identifier,
    Instant,
    Interaction,
    Model,
    ResetReason,
    Role,
    RunOutcome,
    SessionKey,
    ShortText,
    Trigger,
    Usage,
    Writer,
    canonical_json,
    digest,
    in_utc,
)


class Fact(Model):
    """Tags every fact carries: the event's identity and origin."""

    type: str
    event_id: Identifier
    session_key: SessionKey
    session_id: Identifier
    run_id: Identifier | None = None
    occurred_at: Instant
    writer: Writer

    def fingerprint(self) -> str:
        """Digest of the fact's own fields, so a reused eventId can be told from a retry."""
        # Cached by hand: functools.cached_property takes a lock on every first access.
        state = self.__dict__
        cached = state.get("_fingerprint")
        if cached is None:
            # A recorded event built from a fact keeps the fact's dump: just those fields.
            dumped = state.get("_fact_json")
            if dumped is None:
                dumped = state.get("_json")
                if dumped is None:  # not dumped, nor to be (a decoded event): the fact's fields
                    dumped = self.model_dump(mode="json", include=_fact_field_set(self.type))
                else:  # what include=<the fact's fields> gives: canonical_json sorts the keys
                    dumped = {name: dumped[name] for name in fact_fields(self.type)}
            cached = state["_fingerprint"] = digest(canonical_json(dumped))
        return cached  # type: ignore[no-any-return]

    def dumped(self) -> dict[str, Any]:
        """`model_dump(mode="json")` without a recorded event's originator id and version
        (the stored event's columns), computed once per (immutable) instance: the one dump
        its fingerprint, entry digest and stored bytes all derive from. Shared: never
        mutate it."""
        dumped = self.__dict__.get("_json")
        if dumped is None:
            cls = type(self)
            # What model_dump calls, without its wrapper (a fifth of a fact's dump); a
            # fact has no originator fields to leave out, and excluding costs too.
            exclude = ORIGINATOR_FIELDS if "originator_id" in cls.__pydantic_fields__ else None
            dumped = self.__dict__["_json"] = cls.__pydantic_serializer__.to_python(
                self, mode="json", exclude=exclude
            )
        return dumped  # type: ignore[no-any-return]


ORIGINATOR_FIELDS: set[str] = {"originator_id", "originator_version"}  # never mutated


class RunStartedFact(Fact):
    type: Literal["run.started"] = "run.started"
    run_id: Identifier
    trigger: Trigger
    model: ShortText | None = None
    provider: ShortText | None = None


class RunEndedFact(Fact):
    type: Literal["run.ended"] = "run.ended"
    run_id: Identifier
    outcome: RunOutcome
    stop_reason: ShortText | None = None
    usage: Usage = Usage()


class RunErroredFact(Fact):
    type: Literal["run.errored"] = "run.errored"
    run_id: Identifier
    error: ShortText
    error_kind: ShortText | None = None
    usage: Usage = Usage()


class TranscriptEntry(Model):
    id: Identifier
    parent_id: Identifier | None = None
    role: Role
    content: JsonValue
    # Normalised to UTC on the way in, so the hashed entry and the stored row agree.
    timestamp: Annotated[AwareDatetime, AfterValidator(in_utc)]

    @model_validator(mode="after")
    def _bounded(self) -> TranscriptEntry:
        content = self.content
        # ASCII text's JSON takes at most 6 bytes a character (`\u001f`), plus its quotes:
        # short enough, it needs no dump to be known to fit.
        if type(content) is str and content.isascii() and len(content) * 6 + 2 <= MAX_ENTRY_BYTES:
            return self
        if len(canonical_json(content)) > MAX_ENTRY_BYTES:
            raise PydanticCustomError(
                "too_large", "content is larger than {limit} bytes", {"limit": MAX_ENTRY_BYTES}
            )
        return self

    def digest(self) -> str:
        """Content digest: what the generation's hash chain links."""
        cached = self.__dict__.get("_digest")  # by hand, as Fact.fingerprint
        if cached is None:
            cached = self.__dict__["_digest"] = _entry_digest(self.model_dump(mode="json"))
        return cached  # type: ignore[no-any-return]


def _entry_digest(dumped: dict[str, Any]) -> str:
    """The digest of an entry from its `model_dump(mode="json")`: what the dump with
    `by_alias=True` hashed (aliases rename only the entry's own keys, not its content's;
    canonical JSON sorts the keys, so a copy with the renamed ones moved will do)."""
    aliased = dumped.copy()
    for name, alias in _ENTRY_RENAMES:
        aliased[alias] = aliased.pop(name)
    return digest(canonical_json(aliased))


# The entry's fields whose alias differs from their name (parent_id -> parentId).
_ENTRY_RENAMES: tuple[tuple[str, str], ...] = tuple(
    (name, info.alias)
    for name, info in TranscriptEntry.model_fields.items()
    if info.alias is not None and info.alias != name
)


class TranscriptAppendedFact(Fact):
    type: Literal["transcript.appended"] = "transcript.appended"
    entry: TranscriptEntry

    def entry_digest(self) -> str:
        """`entry.digest()`, taken from the fact's own dump (which its fingerprint and
        stored bytes need anyway) instead of a second dump of the entry."""
        state = self.entry.__dict__  # the cache entry.digest() reads
        cached = state.get("_digest")
        if cached is None:
            cached = state["_digest"] = _entry_digest(self.dumped()["entry"])
        return cached  # type: ignore[no-any-return]


class BindingSetFact(Fact):
    type: Literal["binding.set"] = "binding.set"
    run_id: None = None
    provider: Identifier
    cli_session_id: Identifier


class BindingDroppedFact(Fact):
    type: Literal["binding.dropped"] = "binding.dropped"
    run_id: None = None
    provider: Identifier
    reason: ShortText


class OverridesChangedFact(Fact):
    """User overrides (model, thinking level, …); a null value removes the override."""

    type: Literal["overrides.changed"] = "overrides.changed"
    run_id: None = None
    overrides: dict[Identifier, JsonValue]


class GenerationOpenedFact(Fact):
    type: Literal["generation.opened"] = "generation.opened"
    run_id: None = None
    previous_session_id: Identifier | None = None
    reason: ResetReason = "new"
    bindings: dict[str, str] = {}
    overrides: dict[str, JsonValue] = {}


class SessionRotatedFact(Fact):
    """The key moved from `session_id` to `to_session_id`; `carried` names what went along."""

    type: Literal["session.rotated"] = "session.rotated"
    run_id: None = None
    to_session_id: Identifier
    reason: ResetReason
    carried: list[str] = []


class SessionDeletedFact(Fact):
    type: Literal["session.deleted"] = "session.deleted"
    run_id: None = None
    reason: ShortText | None = None


class InteractionRecordedFact(Fact):
    type: Literal["interaction.recorded"] = "interaction.recorded"
    run_id: None = None
    interaction: Interaction


class GenerationPrunedFact(Fact):
    """Maintenance archived an old generation: its transcript rows leave the read models.

    The transcript events stay in the log; `entry_count` and `head_hash` seal the
    generation's hash chain as it stood, so `verify` (and anyone holding the JSONL
    export) can still check it. Nothing may be recorded against a pruned generation.
    """

    type: Literal["generation.pruned"] = "generation.pruned"
    run_id: None = None
    entry_count: NonNegativeInt
    head_hash: str
    reason: ShortText


# What a reporter may send in a batch; the rest come from commands (resolve, reset, …).
IncomingFact = Annotated[
    Union[
        RunStartedFact,
        RunEndedFact,
        RunErroredFact,
        TranscriptAppendedFact,
        BindingSetFact,
        BindingDroppedFact,
        OverridesChangedFact,
    ],
    Field(discriminator="type"),
]


@cache
def fact_fields(type_: str) -> tuple[str, ...]:
    """The fields of the fact a `type` names, in field order (recorded events add theirs
    after them)."""
    return tuple(FACT_CLASSES[type_].model_fields)


@cache
def _fact_field_set(type_: str) -> set[str]:
    return set(fact_fields(type_))  # shared: never mutated


FACT_CLASSES: dict[str, type[Fact]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        RunStartedFact,
        RunEndedFact,
        RunErroredFact,
        TranscriptAppendedFact,
        BindingSetFact,
        BindingDroppedFact,
        OverridesChangedFact,
        GenerationOpenedFact,
        SessionRotatedFact,
        SessionDeletedFact,
        InteractionRecordedFact,
        GenerationPrunedFact,
    )
}
INCOMING_TYPES: frozenset[str] = frozenset(
    {
        "run.started",
        "run.ended",
        "run.errored",
        "transcript.appended",
        "binding.set",
        "binding.dropped",
        "overrides.changed",
    }
)


class Recorded(BaseModel):
    """What the store adds when it records a fact: the aggregate sequence and its clock."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    class_version: ClassVar[int] = 1

    originator_id: UUID
    originator_version: int
    timestamp: AwareDatetime  # recordedAt, the store's clock

    @property
    def recorded_at(self) -> datetime:
        return self.timestamp

    @classmethod
    def from_fact(
        cls,
        fact: Fact,
        *,
        originator_id: UUID,
        originator_version: int,
        timestamp: datetime,
        **derived: int | str,
    ) -> Self:
        """The recorded event of a validated fact, without validating it again.

        Builds what `cls(originator_id=…, …, **dict(iter(fact)), **derived)` builds:
        validation passes the fact's validated values through unchanged, and the caller
        vouches for the rest (a UUID, an int, an aware datetime, and `derived` ints and
        strings of the class's own fields). Its JSON dump is composed from the fact's,
        which the fact's entry digest used already, so the event's fingerprint and
        stored bytes need no dump of their own. tests/property/test_one_dump.py holds
        all of it to the old path.
        """
        fact_class, fact_names, own = _layout(cls)
        if (type(fact) is not fact_class and not isinstance(fact, fact_class)) or tuple(
            derived
        ) != own:
            raise TypeError(f"{cls.__name__} is not built from {type(fact).__name__} {derived}")
        for value in derived.values():
            if type(value) is not int and type(value) is not str:
                raise TypeError(f"{cls.__name__}: {value!r} is not an int or a str")
        state = fact.__dict__
        fact_json = fact.dumped()
        values: dict[str, Any] = state.copy()
        for name in _CACHED:
            values.pop(name, None)
        # A validated fact's __dict__ is its fields in order, then what it cached; an
        # instance of a subclass (a recorded event, say) has fields of its own.
        if type(fact) is not fact_class or len(values) != len(fact_names):
            values = {name: state[name] for name in fact_names}
        values["originator_id"] = originator_id
        values["originator_version"] = originator_version
        values["timestamp"] = timestamp
        if derived:
            values.update(derived)
        # What model_construct does, minus its per-field defaults and alias handling.
        event = cls.__new__(cls)
        _setattr(event, "__dict__", values)
        _setattr(event, "__pydantic_fields_set__", set(_field_set(cls)))
        _setattr(event, "__pydantic_extra__", None)
        _setattr(event, "__pydantic_private__", None)
        # The cached properties' slots: the dump composed from the fact's (ints and strings
        # dump as themselves), the fact's own dump (its fingerprint's fields), and the
        # fingerprint if the fact has it already.
        values["_json"] = {**fact_json, "timestamp": json_moment(timestamp), **derived}
        values["_fact_json"] = fact_json
        if "_fingerprint" in state:
            values["_fingerprint"] = state["_fingerprint"]
        return event


# What Fact caches in an instance's __dict__ (dumped, fingerprint).
_CACHED = ("_json", "_fingerprint")


@cache
def _field_set(cls: type[Recorded]) -> frozenset[str]:
    return frozenset(cls.__pydantic_fields__)


@cache
def _layout(cls: type[Recorded]) -> tuple[type[Fact], tuple[str, ...], tuple[str, ...]]:
    """A recorded event class's fact class, the fact's fields and its own fields: its
    fields are the fact's, then Recorded's, then its own, in that order (the dump's key
    order)."""
    fact_class = FACT_CLASSES[cls.__pydantic_fields__["type"].default]
    assert issubclass(cls, fact_class), cls
    fact_names = tuple(fact_class.__pydantic_fields__)
    recorded = tuple(Recorded.__pydantic_fields__)
    own = tuple(cls.__pydantic_fields__)[len(fact_names) + len(recorded) :]
    assert tuple(cls.__pydantic_fields__) == fact_names + recorded + own, cls
    return fact_class, fact_names, own


def json_moment(moment: datetime) -> str:
    """The JSON text of a recorded event's timestamp. The events of one unit of work
    share their moment, so the last moment's text is kept (one pair: replaced whole,
    so threads never see a moment with another's text)."""
    global _last_moment
    last = _last_moment
    if last[0] is moment:
        return last[1]
    text: str = _DATETIME.to_python(moment, mode="json")
    _last_moment = (moment, text)
    return text


_setattr = object.__setattr__
_DATETIME = TypeAdapter(AwareDatetime).serializer
_last_moment: tuple[datetime | None, str] = (None, "")


class RunStarted(Recorded, RunStartedFact):
    pass


class RunEnded(Recorded, RunEndedFact):
    pass


class RunErrored(Recorded, RunErroredFact):
    pass


class TranscriptAppended(Recorded, TranscriptAppendedFact):
    """Carries its place in the generation's hash chain."""

    seq: int
    prev_hash: str
    entry_hash: str


class BindingSet(Recorded, BindingSetFact):
    pass


class BindingDropped(Recorded, BindingDroppedFact):
    pass


class OverridesChanged(Recorded, OverridesChangedFact):
    pass


class GenerationOpened(Recorded, GenerationOpenedFact):
    pass


class SessionRotated(Recorded, SessionRotatedFact):
    pass


class SessionDeleted(Recorded, SessionDeletedFact):
    pass


class InteractionRecorded(Recorded, InteractionRecordedFact):
    pass


class GenerationPruned(Recorded, GenerationPrunedFact):
    pass


LedgerEvent = Union[
    RunStarted,
    RunEnded,
    RunErrored,
    TranscriptAppended,
    BindingSet,
    BindingDropped,
    OverridesChanged,
    GenerationOpened,
    SessionRotated,
    SessionDeleted,
    InteractionRecorded,
    GenerationPruned,
]


class ConversationSnapshot(BaseModel):
    """The library's snapshot shape: the aggregate's state at a version."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    class_version: ClassVar[int] = 1

    originator_id: UUID
    originator_version: int
    timestamp: AwareDatetime
    topic: str
    state: dict[str, Any]


# What a generation's first transcript entry links to.
GENESIS_HASH = ""


def chain_hash(prev_hash: str, entry_digest: str) -> str:
    """One link of a generation's transcript hash chain."""
    return digest(f"{prev_hash}:{entry_digest}".encode())
