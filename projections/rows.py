"""Read-model rows. Plain frozen dataclasses: the fold returns new ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ConfigDict
from pydantic.alias_generators import to_camel

from sessionledger.domain.events import GENESIS_HASH
from sessionledger.domain.values import GenerationState, Status

T = TypeVar("T")

# Rows serialise to camelCase JSON (HTTP API, --json output) straight from these classes.
CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True)


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One per live key: a pointer to its current generation. Deleted keys have none."""

    __pydantic_config__ = CAMEL

    session_key: str
    session_id: str
    agent: str | None
    channel: str | None
    kind: str | None
    created_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class GenerationRow:
    """One per sessionId, archived and deleted ones included."""

    __pydantic_config__ = CAMEL

    session_id: str
    session_key: str
    previous_session_id: str | None
    next_session_id: str | None
    open_reason: str
    state: GenerationState
    opened_at: datetime  # sessionStartedAt
    opened_position: int  # lineage order, unlike `position` (the last event that touched it)
    archived_at: datetime | None
    archive_reason: str | None
    status: Status
    active_run_ids: tuple[str, ...]
    last_run_id: str | None
    last_error: str | None
    started_at: datetime | None
    ended_at: datetime | None
    runtime_ms: int | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    model: str | None
    provider: str | None
    last_interaction_at: datetime | None
    entry_count: int
    resumable: bool
    head_hash: str
    bindings: dict[str, str] = field(hash=False)
    overrides: dict[str, Any] = field(hash=False)
    late_events: int
    updated_at: datetime
    position: int
    pruned_at: datetime | None = None  # maintenance dropped its entries (the log keeps them)

    @property
    def has_active_run(self) -> bool:
        return bool(self.active_run_ids)


@dataclass(frozen=True, slots=True)
class RunRow:
    __pydantic_config__ = CAMEL

    run_id: str
    session_key: str
    session_id: str
    status: Status
    trigger: str
    writer: str
    model: str | None
    provider: str | None
    started_at: datetime
    ended_at: datetime | None
    runtime_ms: int | None
    stop_reason: str | None
    error: str | None
    error_kind: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    late: bool  # started or ended after its generation was archived
    started_position: int
    ended_position: int | None
    updated_at: datetime
    # parsed from the key like the session row's (added by migration 0005)
    agent: str | None
    channel: str | None


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One transcript entry as stored: its `EntryView` less what its neighbours hold
    (the key, on its generation's row; `prevHash`, on the previous entry's row), which
    every append would otherwise write again (migration 0011)."""

    __pydantic_config__ = CAMEL

    session_id: str
    seq: int
    entry_id: str
    parent_id: str | None
    role: str
    content: Any = field(hash=False)
    timestamp: datetime
    writer: str
    run_id: str | None
    entry_hash: str
    position: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class EntryView:
    """A transcript entry as readers get it: its row, its generation's key and its link
    to the previous entry (`prevHash`: that entry's hash, or "" for the first)."""

    __pydantic_config__ = CAMEL

    session_id: str
    seq: int
    entry_id: str
    parent_id: str | None
    role: str
    content: Any = field(hash=False)
    timestamp: datetime
    writer: str
    run_id: str | None
    session_key: str
    prev_hash: str
    entry_hash: str
    position: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    """What recording an eventId did, so a retry can answer the same. Whether a retry is
    the same event is decided against the logged event at `position`, not a copy of its
    fingerprint kept here (infrastructure/batch.py)."""

    __pydantic_config__ = CAMEL

    event_id: str
    session_id: str  # its generation's row holds the key (migration 0012)
    current_session_id: str | None
    outcome: str
    position: int
    recorded_at: datetime  # the event's recordedAt: dates fenced late events for reports


@dataclass(frozen=True, slots=True)
class SessionView:
    """The row a gateway reads: the key's pointer joined with its current generation."""

    __pydantic_config__ = CAMEL

    session_key: str
    session_id: str
    status: Status
    has_active_run: bool
    active_run_ids: tuple[str, ...]
    last_run_id: str | None
    last_error: str | None
    started_at: datetime | None
    ended_at: datetime | None
    runtime_ms: int | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    model: str | None
    provider: str | None
    session_started_at: datetime
    last_interaction_at: datetime | None
    updated_at: datetime
    entry_count: int
    resumable: bool
    previous_session_id: str | None
    bindings: dict[str, str] = field(hash=False)
    overrides: dict[str, Any] = field(hash=False)
    agent: str | None
    channel: str | None
    kind: str | None
    created_at: datetime
    position: int

    @classmethod
    def of(cls, session: SessionRow, generation: GenerationRow) -> SessionView:
        return cls(
            session_key=session.session_key,
            session_id=session.session_id,
            status=generation.status,
            has_active_run=generation.has_active_run,
            active_run_ids=generation.active_run_ids,
            last_run_id=generation.last_run_id,
            last_error=generation.last_error,
            started_at=generation.started_at,
            ended_at=generation.ended_at,
            runtime_ms=generation.runtime_ms,
            input_tokens=generation.input_tokens,
            output_tokens=generation.output_tokens,
            cache_read_tokens=generation.cache_read_tokens,
            cache_write_tokens=generation.cache_write_tokens,
            model=generation.model,
            provider=generation.provider,
            session_started_at=generation.opened_at,
            last_interaction_at=generation.last_interaction_at,
            updated_at=generation.updated_at,
            entry_count=generation.entry_count,
            resumable=generation.resumable,
            previous_session_id=generation.previous_session_id,
            bindings=generation.bindings,
            overrides=generation.overrides,
            agent=session.agent,
            channel=session.channel,
            kind=session.kind,
            created_at=session.created_at,
            position=max(session.position, generation.position),
        )


def entry_viewer(session_key: str) -> Callable[..., EntryView]:
    """Builds one generation's `EntryView`s from its rows' values (positional, in
    `EntryRow`'s field order, or by name), called in seq order from the first entry: each
    view links to the hash of the one built before it."""
    previous = GENESIS_HASH

    def view(
        session_id: str,
        seq: int,
        entry_id: str,
        parent_id: str | None,
        role: str,
        content: Any,
        timestamp: datetime,
        writer: str,
        run_id: str | None,
        entry_hash: str,
        position: int,
        recorded_at: datetime,
    ) -> EntryView:
        nonlocal previous
        built = _entry_view(
            session_id,
            seq,
            entry_id,
            parent_id,
            role,
            content,
            timestamp,
            writer,
            run_id,
            session_key,
            previous,
            entry_hash,
            position,
            recorded_at,
        )
        previous = entry_hash
        return built

    return view


def slot_builder(cls: type[T]) -> Callable[..., T]:
    """A constructor for a frozen, slotted dataclass (same parameters as its __init__,
    every field required) for rows built per event: it fills a plain twin class with the
    same slots, then makes the object a `cls` (`__class__` assignment, which CPython
    allows between classes of one layout). A frozen dataclass's __init__ sets each slot
    through object.__setattr__, a call per field, where the twin's stores are plain
    attribute stores (2-3x less for the fold's rows, which it builds 60-odd fields of per
    event). The result is an ordinary `cls` instance: same type, slots, equality, hash.

    For classes whose __init__ only assigns (no __post_init__, every field an init
    field); anything else, or a layout CPython refuses, is a TypeError at import."""
    names, scope = _twin(cls)
    body = "".join(f"    __row.{name} = {name}\n" for name in names)
    build: Callable[..., T] = _generated(
        scope,
        f"def build({', '.join(names)}):\n    __row = __new(__twin)\n{body}"
        "    __row.__class__ = __cls\n    return __row\n",
        f"slot_builder({cls.__qualname__})",
    )
    if type(build(*[None] * len(names))) is not cls:  # CPython checked the layouts
        raise TypeError(f"{cls!r}: the slot builder does not make one")
    return build


def slot_evolver(cls: type[T]) -> Callable[[T, dict[str, Any]], T]:
    """`dataclasses.replace(row, **changes)` for the classes `slot_builder` serves,
    without its per-field introspection: the twin gets every slot copied by plain
    attribute loads and stores, then the changed ones (a field name that is not one is
    an AttributeError), then becomes a `cls` (a third less than all values through an
    attrgetter into the builder's arguments; the fold evolves a row per event)."""
    names, scope = _twin(cls)
    scope["__set"] = setattr
    body = "".join(f"    __new_row.{name} = __row.{name}\n" for name in names)
    return _generated(  # type: ignore[no-any-return]
        scope,
        f"def evolve(__row, __changes):\n    __new_row = __new(__twin)\n{body}"
        "    for __name, __value in __changes.items():\n"
        "        __set(__new_row, __name, __value)\n"
        "    __new_row.__class__ = __cls\n    return __new_row\n",
        f"slot_evolver({cls.__qualname__})",
    )


def _twin(cls: type) -> tuple[list[str], dict[str, Any]]:
    """A plain slotted dataclass's field names, and the scope its generated builders run
    in: a twin class with the same slots, object.__new__ and the class itself."""
    if not (
        is_dataclass(cls)
        and "__slots__" in cls.__dict__
        and not hasattr(cls, "__post_init__")
        and all(f.init for f in fields(cls))
    ):
        raise TypeError(f"{cls!r} is not a plain slotted dataclass")
    names = [f.name for f in fields(cls)]
    # The generated functions' own names start with "__", which no field name does here.
    assert not any(name.startswith("__") for name in names), names
    twin = type(f"_{cls.__name__}Slots", (), {"__slots__": cls.__dict__["__slots__"]})
    return names, {"__new": object.__new__, "__twin": twin, "__cls": cls}


def _generated(scope: dict[str, Any], source: str, qualname: str) -> Any:
    exec(source, scope)
    function = scope[source[4 : source.index("(")]]
    function.__qualname__ = qualname
    return function


def row_values(row: Any) -> dict[str, Any]:
    """Column values of a row (shallow, unlike dataclasses.asdict)."""
    return {f.name: getattr(row, f.name) for f in fields(row)}


_entry_view = slot_builder(EntryView)
