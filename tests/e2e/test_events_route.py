"""`POST /v1/events` in process: what a real server cannot be made to do on demand.

Concurrent requests reach `Ledger.record` at the same time (so group commit can take
them into one transaction), and failures of the write itself are answered as documented.
test_http.py holds the route's answers over a real server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.http import create_app
from sessionledger.infrastructure.ledger import Ledger

KEY = "agent:main:telegram:direct:1"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
READ = {"authorization": "Bearer r", "content-type": "application/json"}


def entry(sid: str, entry_id: str) -> dict[str, Any]:
    return {
        "type": "transcript.appended",
        "eventId": f"e-{uuid.uuid4().hex}",
        "sessionKey": KEY,
        "sessionId": sid,
        "occurredAt": T0.isoformat(),
        "writer": "runner",
        "entry": {
            "id": entry_id,
            "parentId": None,
            "role": "user",
            "content": "hello",
            "timestamp": T0.isoformat(),
        },
    }


@pytest.fixture
def served(sqlite_url: str) -> Iterator[tuple[Ledger, FastAPI, str]]:
    settings = ServerSettings(read_tokens=frozenset({"r"}), admin_tokens=frozenset({"a"}))
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        yield ledger, create_app(ledger, settings), sid


def requests_counted(client: TestClient, status: int) -> float:
    series = f'{{method="POST",route="/v1/events",status="{status}"}}'
    for line in client.get("/metrics", headers=READ).text.splitlines():
        if line.startswith("sessionledger_http_requests_total" + series):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_concurrent_requests_reach_the_ledger_together(
    served: tuple[Ledger, FastAPI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write waits in a thread of its own: the writes of three requests in flight
    meet at a barrier inside `Ledger.record` (a write that had to wait for another's to
    finish would break it, and its request would fail)."""
    ledger, app, sid = served
    record = ledger.record
    met = threading.Barrier(3, timeout=30)

    def meeting(events: Any) -> Any:
        met.wait()
        return record(events)

    monkeypatch.setattr(ledger, "record", meeting)

    async def post_together() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/events", json={"events": [entry(sid, f"m{i}")]}, headers=READ)
                    for i in range(3)
                )
            )

    answers = asyncio.run(post_together())
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert [a.json()["results"][0]["outcome"] for a in answers] == ["applied"] * 3
    assert ledger.session(KEY).entry_count == 3


def test_failures_of_the_write_are_answered_as_documented(
    served: tuple[Ledger, FastAPI, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that is unavailable: 503 with Retry-After, counted. A bug: 500 with the
    documented body, logged with its traceback and never shown."""
    ledger, app, sid = served
    client = TestClient(app, raise_server_exceptions=False)

    def unavailable(_: object) -> None:
        raise StoreUnavailable("database is locked")

    def bug(_: object) -> None:
        raise RuntimeError("a bug")

    body = json.dumps({"events": [entry(sid, "m1")]}).encode()
    monkeypatch.setattr(ledger, "record", unavailable)
    before = requests_counted(client, 503)
    answer = client.post("/v1/events", content=body, headers=READ)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json() == {
        "error": "store-unavailable",
        "message": "database is locked",
        "details": None,
    }
    assert requests_counted(client, 503) - before == 1

    monkeypatch.setattr(ledger, "record", bug)
    caplog.clear()
    answer = client.post("/v1/events", content=body, headers=READ)
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "internal-error",
        "message": "internal error; see the server log",
        "details": None,
    }
    assert "unhandled error on POST /v1/events" in caplog.text
    assert "a bug" in caplog.text and "a bug" not in answer.text
    # answered by the server's error layer, outside the app's request metrics
    assert requests_counted(client, 500) == 0
