"""One dump per event: fingerprints, entry digests and stored bytes derived from a single
`model_dump(mode="json")`, and recorded events built from validated facts without a
second validation, are byte for byte what the old code paths produced.

Fingerprints, digests (and the hash chains over them) and stored bytes are persisted
and compared forever, so the old derivations are kept here as the oracle.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from sessionledger.domain import values
from sessionledger.domain.events import (
    FACT_CLASSES,
    ORIGINATOR_FIELDS,
    Fact,
    LedgerEvent,
    Recorded,
    TranscriptAppendedFact,
    TranscriptEntry,
)
from sessionledger.domain.values import canonical_json, digest
from sessionledger.infrastructure.mapper import OrjsonTranscoder, PydanticMapper

RECORDED: dict[str, type[Recorded]] = {
    cls.model_fields["type"].default: cls for cls in get_args(LedgerEvent)
}


# -- the old code paths (the oracle) ------------------------------------------------------


def old_fingerprint(event: Fact) -> str:
    include = set(FACT_CLASSES[event.type].model_fields)  # the fact's own fields
    return digest(canonical_json(event.model_dump(mode="json", include=include)))


def old_entry_digest(entry: TranscriptEntry) -> str:
    return digest(canonical_json(entry.model_dump(mode="json", by_alias=True)))


def old_state(event: Recorded) -> bytes:
    state = event.model_dump(mode="json", exclude=ORIGINATOR_FIELDS)
    class_version = getattr(type(event), "class_version", 1)
    if class_version > 1:
        state["class_version"] = class_version
    return OrjsonTranscoder().encode(state)


def old_event(cls: type[Recorded], fact: Fact, **recorded: Any) -> Recorded:
    return cls(**recorded, **dict(iter(fact)))


# -- generated facts ----------------------------------------------------------------------

# Category Cc is exactly the control characters the identifiers refuse (U+0000-001F,
# U+007F-009F); Cs (surrogates) cannot be encoded.
CLEAN = st.characters(exclude_categories=("Cc", "Cs"))
ANY = st.characters(exclude_categories=("Cs",))
ids = st.text(CLEAN, min_size=1, max_size=20) | st.text(CLEAN, min_size=128, max_size=128)
keys = st.text(CLEAN, min_size=1, max_size=40)
short = st.text(ANY, max_size=30)
zones = (
    st.sampled_from([UTC])
    | st.timezones()
    | st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    )
)
# Within a day of datetime's ends a time with an offset may have no UTC date: such
# facts are refused (tests/integration/test_bad_input.py), so none are made here.
moments = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=zones)
integers = st.integers() | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
big = st.integers(min_value=0) | st.integers(min_value=2**64 - 2, max_value=2**70)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | integers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(ANY, max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(ANY, max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def choice(literal: Any) -> st.SearchStrategy[str]:
    return st.sampled_from(get_args(literal))


usages = st.fixed_dictionaries(
    {}, optional={"input": big, "output": big, "cache_read": big, "cache_write": big}
)
entries = st.fixed_dictionaries(
    {
        "id": ids,
        "role": choice(values.Role),
        "content": json_values,
        "timestamp": moments,
    },
    optional={"parent_id": optional(ids)},
)

# Per type: (required fields, fields with defaults that a reporter may leave out).
EXTRA: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "run.started": (
        {"run_id": ids, "trigger": choice(values.Trigger)},
        {"model": optional(short), "provider": optional(short)},
    ),
    "run.ended": (
        {"run_id": ids, "outcome": choice(values.RunOutcome)},
        {"stop_reason": optional(short), "usage": usages},
    ),
    "run.errored": (
        {"run_id": ids, "error": short},
        {"error_kind": optional(short), "usage": usages},
    ),
    "transcript.appended": ({"entry": entries}, {"run_id": optional(ids)}),
    "binding.set": ({"provider": ids, "cli_session_id": ids}, {}),
    "binding.dropped": ({"provider": ids, "reason": short}, {}),
    "overrides.changed": ({"overrides": st.dictionaries(ids, json_values, max_size=4)}, {}),
    "generation.opened": (
        {},
        {
            "previous_session_id": optional(ids),
            "reason": choice(values.ResetReason),
            "bindings": st.dictionaries(short, short, max_size=3),
            "overrides": st.dictionaries(short, json_values, max_size=3),
        },
    ),
    "session.rotated": (
        {"to_session_id": ids, "reason": choice(values.ResetReason)},
        {"carried": st.lists(short, max_size=3)},
    ),
    "session.deleted": ({}, {"reason": optional(short)}),
    "interaction.recorded": ({"interaction": choice(values.Interaction)}, {}),
    "generation.pruned": ({"entry_count": big, "head_hash": short, "reason": short}, {}),
}
assert EXTRA.keys() == FACT_CLASSES.keys() == RECORDED.keys()


@st.composite
def facts(draw: st.DrawFn) -> Fact:
    type_ = draw(st.sampled_from(sorted(FACT_CLASSES)))
    required, optional_fields = EXTRA[type_]
    fields = draw(
        st.fixed_dictionaries(
            {
                "event_id": ids,
                "session_key": keys,
                "session_id": ids,
                "occurred_at": moments,
                "writer": choice(values.Writer),
                **required,
            },
            optional=optional_fields,
        )
    )
    return FACT_CLASSES[type_].model_validate({"type": type_, **fields})


def revalidated(fact: Fact) -> Fact:
    """The same fact, fresh: nothing cached on it."""
    return type(fact).model_validate(fact.model_dump())


def fields_of(event: Recorded) -> list[tuple[str, type, Any, Any]]:
    """The event's field values, in order, with their types (and time zones)."""
    return [
        (name, type(value), getattr(value, "tzinfo", None), value)
        for name, value in event.__dict__.items()
        if not name.startswith("_")
    ]


@settings(max_examples=600, deadline=None)
@given(
    fact=facts(),
    originator_id=st.uuids(),
    originator_version=st.integers(1, 2**40),
    timestamp=moments,
    chain=st.tuples(st.integers(1, 2**40), short, short),
    fingerprint_first=st.booleans(),
)
def test_one_dump_is_byte_identical_to_the_old_paths(
    fact: Fact,
    originator_id: UUID,
    originator_version: int,
    timestamp: datetime,
    chain: tuple[int, str, str],
    fingerprint_first: bool,
) -> None:
    cls = RECORDED[fact.type]
    recorded: dict[str, Any] = {
        "originator_id": originator_id,
        "originator_version": originator_version,
        "timestamp": timestamp,
    }
    derived: dict[str, Any] = {}
    if isinstance(fact, TranscriptAppendedFact):
        seq, prev_hash, entry_hash = chain
        derived = {"seq": seq, "prev_hash": prev_hash, "entry_hash": entry_hash}
    old = old_event(cls, revalidated(fact), **recorded, **derived)

    # The fact, as the aggregate uses it: entry digest first, fingerprint maybe.
    if isinstance(fact, TranscriptAppendedFact):
        assert fact.entry_digest() == old_entry_digest(fact.entry)
        assert fact.entry.digest() == old_entry_digest(fact.entry)
        fresh = TranscriptEntry.model_validate(fact.entry.model_dump())
        assert fresh.digest() == old_entry_digest(fact.entry)
    if fingerprint_first:
        assert fact.fingerprint() == old_fingerprint(fact)

    new = cls.from_fact(fact, **recorded, **derived)
    assert new == old
    assert fields_of(new) == fields_of(old)
    assert new.__pydantic_fields_set__ == old.__pydantic_fields_set__
    assert new.__pydantic_extra__ == old.__pydantic_extra__
    assert new.__pydantic_private__ == old.__pydantic_private__
    assert list(new.dumped().items()) == list(
        old.model_dump(mode="json", exclude=ORIGINATOR_FIELDS).items()
    )
    assert list(fact.dumped().items()) == list(fact.model_dump(mode="json").items())

    fingerprint = old_fingerprint(old)
    assert new.fingerprint() == fingerprint
    assert fact.fingerprint() == fingerprint
    assert revalidated(fact).fingerprint() == fingerprint
    assert old.fingerprint() == fingerprint  # an event not built from a fact (decoded, …)

    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    state = old_state(old)
    assert mapper.to_stored_event(new).state == state  # type: ignore[arg-type]
    assert mapper.to_stored_event(old).state == state  # type: ignore[arg-type]
    # A decoded event: its dump is its own (not composed), the derivations the same.
    decoded = mapper.decode(cls_topic(cls), originator_id, originator_version, state)
    assert mapper.to_stored_event(decoded).state == old_state(decoded)  # type: ignore[arg-type]
    assert decoded.fingerprint() == old_fingerprint(decoded)  # type: ignore[attr-defined]


def cls_topic(cls: type[Recorded]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def test_from_fact_refuses_what_validation_would() -> None:
    """Not a shortcut around the schema: the wrong class, missing or misplaced fields."""
    import pytest

    fact = _fact("binding.set", provider="claude", cli_session_id="c1")
    recorded = _RECORDED
    with pytest.raises(TypeError):
        RECORDED["binding.dropped"].from_fact(fact, **recorded)
    with pytest.raises(TypeError):
        RECORDED["binding.set"].from_fact(fact, **recorded, seq=1)
    with pytest.raises(TypeError):
        RECORDED["transcript.appended"].from_fact(fact, **recorded)
    assert RECORDED["binding.set"].from_fact(fact, **recorded) == RECORDED[
        "binding.set"
    ].model_validate({**recorded, **dict(iter(fact))})


def test_from_fact_refuses_derived_values_its_dump_cannot_pass_through() -> None:
    """Derived fields join the event's dump as they are: only ints and strings may."""
    import pytest

    moment = datetime(2026, 1, 1, tzinfo=UTC)
    fact = _fact(
        "transcript.appended",
        entry={"id": "m1", "role": "user", "content": "hi", "timestamp": moment},
    )
    recorded = _RECORDED
    good: dict[str, Any] = {"seq": 1, "prev_hash": "", "entry_hash": "h"}
    assert RECORDED["transcript.appended"].from_fact(fact, **recorded, **good).seq == 1
    for name, value in (("seq", True), ("seq", 1.0), ("prev_hash", None), ("entry_hash", b"h")):
        with pytest.raises(TypeError):
            RECORDED["transcript.appended"].from_fact(fact, **recorded, **{**good, name: value})


# What a recorded event adds to its fact: from_fact's keyword arguments.
_RECORDED: dict[str, Any] = {
    "originator_id": UUID(int=1),
    "originator_version": 1,
    "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
}


def _fact(type_: str, **fields: Any) -> Any:
    """A validated fact of `type_` on key "k", generation "s1"."""
    return FACT_CLASSES[type_].model_validate(
        {
            "type": type_,
            "event_id": "e1",
            "session_key": "k",
            "session_id": "s1",
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
            "writer": "runner",
            **fields,
        }
    )
