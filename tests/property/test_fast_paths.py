"""Shortcuts on the ingest path decide exactly what the plain checks they skip decide.

The identifier check answers "printable" without its regex, an ASCII transcript entry
short enough is known to fit without a dump of its content, and the fold and the
aggregate dispatch on an event's exact class: each is held here to the rule it stands
for.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.events import LedgerEvent, TranscriptAppendedFact, TranscriptEntry
from sessionledger.domain.values import MAX_ENTRY_BYTES, canonical_json, no_control_characters

# The identifiers' rule, as it was written before the shortcut.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@settings(max_examples=2000)
@given(st.text())
@example("a\x00b")
@example("\x7f")
@example("\x9f")
@example("\xa0")  # unprintable, yet not a control character
@example("\u2028")
@example("caf\xe9 \U0001f600")
def test_the_identifier_check_refuses_exactly_the_control_characters(value: str) -> None:
    if CONTROL.search(value):
        with pytest.raises(ValueError, match="control characters"):
            no_control_characters(value)
    else:
        assert no_control_characters(value) is value


def entry(content: Any) -> TranscriptEntry:
    return TranscriptEntry.model_validate(
        {"id": "m1", "role": "user", "content": content, "timestamp": T0}
    )


def fits(content: Any) -> bool:
    try:
        entry(content)
    except ValidationError as e:
        assert e.errors()[0]["type"] == "too_large"
        return False
    return True


# Lengths around the shortcut's bound (6 bytes a character, plus the quotes) and the limit.
BOUND = (MAX_ENTRY_BYTES - 2) // 6
lengths = st.sampled_from([0, 1, BOUND - 1, BOUND, BOUND + 1, MAX_ENTRY_BYTES - 2]) | st.integers(
    0, MAX_ENTRY_BYTES + 8
)


@settings(max_examples=60, deadline=None)
@given(
    length=lengths,
    fill=st.sampled_from(["a", "\x00", "\n", '"', "\\", "\x1f", "\x7f", "\xe9", "\u20ac"]),
)
def test_an_entry_fits_exactly_when_its_content_json_does(length: int, fill: str) -> None:
    content = fill * length
    assert fits(content) == (len(canonical_json(content)) <= MAX_ENTRY_BYTES)


def test_content_the_json_encoder_refuses_is_still_refused() -> None:
    # A lone surrogate cannot be encoded: refused as before, not waved through as short.
    with pytest.raises(ValidationError):
        entry("\ud800")


def test_the_dispatch_on_exact_event_classes_sees_every_event() -> None:
    """The fold and `evolve` compare `type(event)` with each event class: that holds only
    while no event class has subclasses."""
    for cls in get_args(LedgerEvent):
        assert cls.__subclasses__() == [], cls


def test_a_recorded_event_passed_as_a_fact_is_still_decided_by_its_kind() -> None:
    conversation = Conversation.open("k", at=T0, writer="ingress")
    sid = conversation.current_session_id
    assert sid is not None
    fact = TranscriptAppendedFact.model_validate(
        {
            "event_id": "e1",
            "session_key": "k",
            "session_id": sid,
            "occurred_at": T0,
            "writer": "runner",
            "entry": {"id": "m1", "role": "user", "content": "hi", "timestamp": T0},
        }
    )
    assert conversation.record(fact).outcome == "applied"
    (event,) = conversation.collect_events()[1:]
    # The recorded event itself, reported again: the same entry, so a duplicate.
    assert conversation.record(event).outcome == "duplicate"  # type: ignore[arg-type]
