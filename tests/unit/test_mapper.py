"""The mapper round-trips events and upcasts old payloads (the library's convention)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar
from uuid import uuid4

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from hypothesis import given
from hypothesis import strategies as st

from sessionledger.domain.conversation import Conversation
from sessionledger.domain.events import (
    ConversationSnapshot,
    OverridesChangedFact,
    Recorded,
    RunStarted,
    RunStartedFact,
    TranscriptAppendedFact,
)
from sessionledger.infrastructure.mapper import OrjsonTranscoder, PydanticMapper, stored_event

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class RunStartedV2(Recorded, RunStartedFact):
    """A later version that added `agentVersion`; v1 payloads predate it."""

    class_version: ClassVar[int] = 2
    agent_version: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["agent_version"] = "unknown"


def mapper() -> PydanticMapper:
    return PydanticMapper(transcoder=OrjsonTranscoder())


def started(**extra: Any) -> dict[str, Any]:
    return {
        "originator_id": uuid4(),
        "originator_version": 3,
        "timestamp": NOW,
        "event_id": "e1",
        "session_key": "agent:main:main",
        "session_id": "s1",
        "run_id": "r1",
        "occurred_at": NOW,
        "writer": "runner",
        "trigger": "user",
        **extra,
    }


def test_a_stored_event_is_the_librarys_dataclass() -> None:
    oid = uuid4()
    built = stored_event(oid, 7, "domain.events:RunStarted", b"{}")
    plain = StoredEvent(
        originator_id=oid, originator_version=7, topic="domain.events:RunStarted", state=b"{}"
    )
    assert type(built) is StoredEvent
    assert built == plain and hash(built) == hash(plain) and repr(built) == repr(plain)


def test_round_trip_is_exact() -> None:
    event = RunStarted(**started(model="opus"))
    stored = mapper().to_stored_event(event)
    assert stored.topic == "sessionledger.domain.events:RunStarted"
    assert mapper().to_domain_event(stored) == event


def test_topics_of_the_former_top_level_package_still_resolve() -> None:
    """Stores written while the domain was installed as `domain` hold such topics."""
    event = RunStarted(**started(model="opus"))
    stored = mapper().to_stored_event(event)
    old = StoredEvent(
        stored.originator_id, stored.originator_version, "domain.events:RunStarted", stored.state
    )
    assert mapper().to_domain_event(old) == event


def test_old_payloads_are_upcast() -> None:
    v1 = mapper().to_stored_event(RunStarted(**started()))
    old = StoredEvent(v1.originator_id, v1.originator_version, get_topic(RunStartedV2), v1.state)
    upcast = mapper().to_domain_event(old)
    assert isinstance(upcast, RunStartedV2)
    assert upcast.agent_version == "unknown"
    current = mapper().to_stored_event(upcast)
    assert b'"class_version":2' in current.state
    assert mapper().to_domain_event(current) == upcast


# A UTC offset finer than a minute (the Python API can pass one; JSON cannot carry it).
@given(
    at=st.datetimes(
        min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
    ),
    offset=st.integers(-86_399_999_999, 86_399_999_999).map(
        lambda us: timezone(timedelta(microseconds=us))
    ),
)
def test_every_aware_time_reaches_the_log_as_the_same_instant(
    at: datetime, offset: timezone
) -> None:
    local = at.astimezone(offset)
    fact = RunStartedFact(
        event_id="e1",
        session_key="agent:main:telegram:direct:1",
        session_id="s1",
        run_id="r1",
        occurred_at=local,
        writer="runner",
        trigger="user",
    )
    logged = RunStartedFact.model_validate_json(fact.model_dump_json())
    assert logged.occurred_at == local  # the instant, whatever the offset
    assert logged.fingerprint() == fact.fingerprint()  # what the rebuild recomputes
    if offset.utcoffset(None) % timedelta(minutes=1) == timedelta(0):
        assert fact.occurred_at.utcoffset() == offset.utcoffset(None)  # kept as given


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond orjson's 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), JSON_VALUES, max_size=4))
def test_a_snapshot_reads_back_as_pydantics_own_dump_does(overrides: dict[str, Any]) -> None:
    """The snapshot's state is dumped without pydantic (`_snapshot_state`); what it reads
    back as must equal what pydantic's dump of the same snapshot reads back as."""
    conversation = Conversation.open("agent:main:main", at=NOW, writer="ingress")
    sid = conversation.current_session_id
    assert sid is not None
    tags: dict[str, Any] = {"session_key": "agent:main:main", "session_id": sid, "occurred_at": NOW}
    conversation.record(
        RunStartedFact(event_id="e1", run_id="r1", writer="runner", trigger="user", **tags)
    )
    for n in range(3):
        parent = f"m{n - 1}" if n else None
        entry: dict[str, Any] = {"id": f"m{n}", "parent_id": parent, "role": "user"}
        entry |= {"content": {"text": f"turn {n}"}, "timestamp": NOW}
        conversation.record(
            TranscriptAppendedFact(event_id=f"t{n}", writer="runner", entry=entry, **tags)
        )
    if overrides:
        conversation.record(
            OverridesChangedFact(event_id="o1", writer="ingress", overrides=overrides, **tags)
        )
    snapshot = conversation.take_snapshot()
    ours = mapper().to_stored_event(snapshot)
    pydantics = mapper().transcoder.encode(
        snapshot.model_dump(mode="json", exclude={"originator_id", "originator_version"})
    )
    read = mapper().to_domain_event(ours)
    assert type(read) is ConversationSnapshot
    assert read == mapper().to_domain_event(
        StoredEvent(ours.originator_id, ours.originator_version, ours.topic, pydantics)
    )
    assert read == snapshot
    assert Conversation.from_snapshot(read).to_state() == conversation.to_state()
