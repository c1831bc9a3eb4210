"""Fuzz the HTTP API from its own OpenAPI document (schemathesis, in-process over ASGI).

For every operation, valid and invalid requests: no 5xx, every status code, content type,
header and body as the document declares, and no traceback in any answer. Half of the
generated requests are steered onto keys (and current sessionIds) that exist, so the write
paths are exercised too and not only the 404s of random keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sessionledger.domain.errors import LedgerError
from sessionledger.infrastructure.http import create_app
from sessionledger.infrastructure.ledger import Ledger

KEYS = [
    "agent:main:telegram:direct:42",
    "agent:ops:web:direct:team/room",  # travels as %2F
    "cron:nightly-digest",
]
MAX_EXAMPLES = 60  # per operation and generation mode; the whole file stays under ~60 s


@schemathesis.check
def no_traceback(ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]) -> None:
    text = response.text or ""
    if "Traceback (most recent call last)" in text or 'File "/' in text:
        raise AssertionError(f"traceback in the response body: {text[:500]}")
    if response.status_code >= 400:
        body = response.json()
        if set(body) != {"error", "message", "details"}:
            raise AssertionError(f"error body is not {{error, message, details}}: {body}")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    no_traceback,
]


def seed(ledger: Ledger) -> None:
    for number, key in enumerate(KEYS):
        sid = ledger.resolve(key).session.session_id
        run = f"seed-run-{number}"
        ledger.record(
            [
                {
                    "type": "run.started",
                    "eventId": f"seed-{number}-1",
                    "sessionKey": key,
                    "sessionId": sid,
                    "runId": run,
                    "occurredAt": "2026-11-21T10:00:00Z",
                    "writer": "runner",
                    "trigger": "user",
                },
                {
                    "type": "transcript.appended",
                    "eventId": f"seed-{number}-2",
                    "sessionKey": key,
                    "sessionId": sid,
                    "occurredAt": "2026-11-21T10:00:01Z",
                    "writer": "runner",
                    "entry": {
                        "id": "m1",
                        "role": "user",
                        "content": "hello",
                        "timestamp": "2026-11-21T10:00:01Z",
                    },
                },
            ]
        )
        ledger.set_binding(key, "claude-cli", f"cli-{number}")


@pytest.fixture(scope="module")
def fuzz_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "ledger.db"
    ledger = Ledger.open(f"sqlite:///{path}")
    seed(ledger)
    try:
        yield ledger
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_ledger: Ledger) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_ledger))


def current_session_id(ledger: Ledger, key: str) -> str | None:
    try:
        return ledger.session(key).session_id
    except LedgerError:
        return None


def steer(case: schemathesis.Case[Any], ledger: Ledger, data: st.DataObject) -> None:
    """Point some generated requests at keys that exist (their shape stays as generated)."""
    if not data.draw(st.booleans(), label="steer"):
        return
    key = data.draw(st.sampled_from(KEYS), label="key")
    if case.path_parameters and "session_key" in case.path_parameters:
        case.path_parameters["session_key"] = key
    if case.path_parameters and "run_id" in case.path_parameters:
        case.path_parameters["run_id"] = f"seed-run-{KEYS.index(key)}"
    events = case.body.get("events") if isinstance(case.body, dict) else None
    if isinstance(events, list):
        sid = current_session_id(ledger, key)
        for item in events:
            if isinstance(item, dict) and sid is not None:
                item["sessionKey"] = key
                item["sessionId"] = sid


def _operations() -> list[str]:
    """The document's operations, known at collection time (building it reads no database)."""
    document = create_app(cast(Ledger, None)).openapi()
    return [
        f"{method.upper()} {route}"
        for route, methods in document["paths"].items()
        for method in methods
    ]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", _operations())
def test_every_operation_conforms_to_its_schema(
    label: str, mode: GenerationMode, api_schema: Any, fuzz_ledger: Ledger
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any], data: st.DataObject) -> None:
        steer(case, fuzz_ledger, data)
        case.call_and_validate(checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        pytest.skip(f"{label}: nothing in this operation can be made invalid")


def test_the_fuzzed_store_still_replays_to_the_same_rows(fuzz_ledger: Ledger) -> None:
    """Runs after the fuzzing (file order): whatever it wrote, the read models are sound."""
    position, head = fuzz_ledger.positions()
    assert position == head > 3 * 4  # the fuzzing wrote beyond the seed (4 events a key)
    assert fuzz_ledger.replay_mismatches() == []
