"""jsoncodec reads integers of any size exactly, and its cheap pre-check for them never
misses one."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sessionledger.infrastructure import jsoncodec

# What the codec looked for before (a regex search, about 20x slower): the oracle.
LONG_NUMBER = re.compile(rb"\d{20,}|-\d{19}")

numbers = (
    st.integers()
    | st.integers(min_value=2**63 - 3, max_value=2**64 + 3)
    | st.integers(min_value=-(2**63) - 3, max_value=-(2**63) + 3)
    | st.integers(min_value=10**18, max_value=10**21).map(lambda n: -n)
    | st.integers(min_value=2**64, max_value=2**90)
)
values = st.recursive(
    st.none()
    | st.booleans()
    | numbers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.sampled_from('0123456789-+eE. ab"\\é'), max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=500)
@given(value=values)
def test_loads_reads_what_was_dumped(value: Any) -> None:
    text = jsoncodec.dumps(value)
    assert jsoncodec.loads(text) == value
    assert jsoncodec.loads(text.decode()) == value
    assert repr(jsoncodec.loads(text)) == repr(json.loads(text))  # types too (int/float)


# Runs of digits (and minus signs) around the lengths that matter, between other bytes.
runs = st.text("0123456789", min_size=15, max_size=25).map(str.encode)
pieces = st.binary(max_size=6) | runs | st.sampled_from([b"-", b"--", b"0-", b"e-", b"\xd9"])


@settings(max_examples=1000)
@given(raw=st.lists(pieces, max_size=6).map(b"".join))
def test_the_pre_check_finds_whatever_the_regex_found(raw: bytes) -> None:
    if LONG_NUMBER.search(raw):
        assert jsoncodec.may_hold_long_integer(raw)
