"""Rows built by `slot_builder` (the fold's rows, the reads' and the audit's) are the
rows their dataclass builds: same type, fields, equality, hash and immutability; rows
evolved by `slot_evolver` are what `dataclasses.replace` makes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionledger.infrastructure.batch import RecordResult
from sessionledger.projections.audit import AuditEntry
from sessionledger.projections.fold import Transition
from sessionledger.projections.rows import (
    EntryRow,
    EntryView,
    GenerationRow,
    ReceiptRow,
    RunRow,
    SessionRow,
    slot_builder,
    slot_evolver,
)


@pytest.mark.parametrize(
    "cls",
    [
        SessionRow,
        GenerationRow,
        RunRow,
        EntryRow,
        EntryView,
        ReceiptRow,
        Transition,
        RecordResult,
        AuditEntry,
    ],
)
def test_a_slot_built_row_is_the_dataclass_row(cls: Any) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    values = [f"v{i}" for i in range(len(names))]
    built = slot_builder(cls)(*values)
    plain = cls(*values)
    assert type(built) is cls
    assert built == plain
    assert [getattr(built, n) for n in names] == values
    assert repr(built) == repr(plain)
    assert slot_builder(cls)(**dict(zip(names, values, strict=True))) == plain
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, names[0], "changed")
    assert not hasattr(built, "__dict__")
    assert hash(built) == hash(plain)
    # Every field, defaults included, is given: the builder has no defaults.
    with pytest.raises(TypeError):
        slot_builder(cls)(*values[:-1])


@pytest.mark.parametrize("cls", [GenerationRow, RunRow])
@given(data=st.data())
def test_an_evolved_row_is_what_replace_makes(cls: Any, data: st.DataObject) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    row = slot_builder(cls)(*[f"v{i}" for i in range(len(names))])
    changed = data.draw(st.lists(st.sampled_from(names), unique=True))
    changes = {name: data.draw(st.integers() | st.none()) for name in changed}
    evolved = slot_evolver(cls)(row, changes)
    assert type(evolved) is cls and not hasattr(evolved, "__dict__")
    assert evolved == dataclasses.replace(row, **changes)
    assert row == slot_builder(cls)(*[f"v{i}" for i in range(len(names))])  # untouched
    with pytest.raises(AttributeError):
        slot_evolver(cls)(row, {"no_such_field": 1})


def test_a_class_it_cannot_build_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (NoSlots, PostInit, int):
        with pytest.raises(TypeError):
            slot_builder(cls)
        with pytest.raises(TypeError):
            slot_evolver(cls)
