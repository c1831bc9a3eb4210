"""The event vocabulary (SPEC §3).

Two layers, one set of fields:
- a *fact* is what a reporter tells the store (validated at the edge, camelCase JSON);
- a *recorded event* is that fact once the aggregate accepted it: the same fields plus
  the library's originator id/version and the store's `timestamp` (recordedAt).

Recorded events are immutable pydantic models and versioned with the library's
`class_version` / `upcast_vN_vN+1` convention (see infrastructure.mapper).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Annotated, Any, ClassVar, Literal, Union
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    NonNegativeInt,
    model_validator,
)
from pydantic_core import PydanticCustomError

from domain.values import (
    MAX_ENTRY_BYTES,
    Identifier,
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
)


class Fact(Model):
    """Tags every fact carries (SPEC §2: the event's identity and origin)."""

    type: str
    event_id: Identifier
    session_key: SessionKey
    session_id: Identifier
    run_id: Identifier | None = None
    occurred_at: AwareDatetime
    writer: Writer

    def fingerprint(self) -> str:
        """Digest of the fact's own fields, so a reused eventId can be told from a retry."""
        return digest(canonical_json(self.model_dump(mode="json", include=_fact_fields(self.type))))


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
    timestamp: Annotated[AwareDatetime, AfterValidator(lambda t: t.astimezone(UTC))]

    @model_validator(mode="after")
    def _bounded(self) -> TranscriptEntry:
        if len(canonical_json(self.content)) > MAX_ENTRY_BYTES:
            raise PydanticCustomError(
                "too_large", "content is larger than {limit} bytes", {"limit": MAX_ENTRY_BYTES}
            )
        return self

    def digest(self) -> str:
        """Content digest: what the generation's hash chain links."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        return digest(canonical_json(self.model_dump(mode="json", by_alias=True)))


class TranscriptAppendedFact(Fact):
    type: Literal["transcript.appended"] = "transcript.appended"
    entry: TranscriptEntry


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
def _fact_fields(type_: str) -> set[str]:
    """The fields of the fact a `type` names (recorded events add their own)."""
    return set(FACT_CLASSES[type_].model_fields)  # shared: never mutated


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


def chain_hash(prev_hash: str, entry_digest: str) -> str:
    """One link of a generation's transcript hash chain."""
    return digest(prev_hash.encode(), b":", entry_digest.encode())
