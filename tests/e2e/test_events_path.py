"""`POST /v1/events` ahead of FastAPI (infrastructure.http.EventsPath), in process.

test_http.py holds the served answers of the lean path and the route to each other over
a real server. Here: which requests the lean path serves itself and which it hands to
FastAPI, so that those equivalence tests do compare the two paths; and the answers to
failures of the write itself, which a real server cannot be made to produce on demand.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from sessionledger.domain.errors import StoreUnavailable
from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.http import EventsPath, create_app
from sessionledger.infrastructure.ledger import Ledger

KEY = "agent:main:telegram:direct:1"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
READ = {"authorization": "Bearer r", "content-type": "application/json"}
ROUTED = {**READ, "content-type": "application/json; charset=utf-8"}


def entry(sid: str, entry_id: str, parent: str | None = None) -> dict[str, Any]:
    return {
        "type": "transcript.appended",
        "eventId": f"e-{uuid.uuid4().hex}",
        "sessionKey": KEY,
        "sessionId": sid,
        "occurredAt": T0.isoformat(),
        "writer": "runner",
        "entry": {
            "id": entry_id,
            "parentId": parent,
            "role": "user",
            "content": "hello",
            "timestamp": T0.isoformat(),
        },
    }


class Served:
    """The app, and the paths of the requests `EventsPath` handed on to FastAPI."""

    def __init__(self, ledger: Ledger) -> None:
        settings = ServerSettings(read_tokens=frozenset({"r"}), admin_tokens=frozenset({"a"}))
        self.app = create_app(ledger, settings)
        assert isinstance(self.app.events, EventsPath)
        self.declined: list[str] = []
        stack = self.app.events.app

        async def handed_on(scope: Scope, receive: Receive, send: Send) -> None:
            self.declined.append(scope["path"])
            await stack(scope, receive, send)

        self.app.events.app = handed_on
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[Any, bool]:
        """The answer, and whether FastAPI gave it."""
        before = len(self.declined)
        answer = self.client.post("/v1/events", content=body, headers=headers)
        return answer, len(self.declined) > before

    def requests_counted(self, status: int) -> float:
        series = f'{{method="POST",route="/v1/events",status="{status}"}}'
        for line in self.client.get("/metrics", headers=READ).text.splitlines():
            if line.startswith("sessionledger_http_requests_total" + series):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
def served(sqlite_url: str) -> Iterator[tuple[Served, str]]:
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        yield Served(ledger), sid


def test_the_plain_case_is_served_ahead_of_fastapi(served: tuple[Served, str]) -> None:
    app, sid = served
    for events in (
        [entry(sid, "m1")],
        [entry(sid, "m2", parent="m1"), entry(sid, "m9", parent="nope")],
        [entry(sid, f"k{i}") for i in range(1000)],
    ):
        answer, declined = app.post(json.dumps({"events": events}).encode(), READ)
        assert answer.status_code == 200 and not declined
        assert len(answer.json()["results"]) == len(events)
    admin = {**READ, "authorization": "Bearer a"}
    answer, declined = app.post(json.dumps({"events": [entry(sid, "m3")]}).encode(), admin)
    assert answer.status_code == 200 and not declined
    # GET and other paths never reach it
    assert app.client.get("/healthz").status_code == 200 and not app.declined


def test_everything_else_is_handed_to_fastapi(served: tuple[Served, str]) -> None:
    app, sid = served
    good = json.dumps({"events": [entry(sid, "m1")]}).encode()
    for body, headers, status in (
        (good, ROUTED, 200),
        (good, {**READ, "content-type": "text/plain"}, 422),
        (good, {"content-type": "application/json"}, 401),
        (good, {**READ, "authorization": "Bearer nope"}, 401),
        (b"{", READ, 400),
        (b'{"events": []}', READ, 422),
        (json.dumps({"events": [entry(sid, "x")] * 1001}).encode(), READ, 413),
        (b'{"events": [' + b" " * (16 * 1024 * 1024) + b"]}", READ, 413),
    ):
        answer, declined = app.post(body, headers)
        assert (answer.status_code, declined) == (status, True), (headers, body[:50])

    # While FastAPI's own telemetry is configured, every request goes through FastAPI,
    # to be traced and measured there.
    assert app.app.events is not None
    app.app.events.telemetry = lambda: True
    answer, declined = app.post(json.dumps({"events": [entry(sid, "m2")]}).encode(), READ)
    assert (answer.status_code, declined) == (200, True)


def test_failures_of_the_write_are_answered_as_the_route_answers(
    served: tuple[Served, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app, sid = served
    ledger = app.app.state.ledger

    def unavailable(_: object) -> None:
        raise StoreUnavailable("database is locked")

    def bug(_: object) -> None:
        raise RuntimeError("a bug")

    body = json.dumps({"events": [entry(sid, "m1")]}).encode()
    for failure, status, counted in ((unavailable, 503, 1), (bug, 500, 0)):
        monkeypatch.setattr(ledger, "record", failure)
        answers = []
        for headers in (READ, ROUTED):
            before = app.requests_counted(status)
            caplog.clear()
            answer, declined = app.post(body, headers)
            assert declined == (headers is ROUTED)
            assert app.requests_counted(status) - before == counted
            if status == 500:  # logged with its traceback, never shown
                assert "unhandled error on POST /v1/events" in caplog.text
                assert "a bug" in caplog.text and "a bug" not in answer.text
            answers.append(answer)
        fast, routed = answers
        assert fast.status_code == routed.status_code == status
        assert fast.content == routed.content
        assert [(k, v) for k, v in fast.headers.items() if k != "server-timing"] == [
            (k, v) for k, v in routed.headers.items() if k != "server-timing"
        ]
        assert ("server-timing" in fast.headers) == ("server-timing" in routed.headers)
    assert fast.json()["error"] == "internal-error"


def test_the_write_threads_stop_with_the_app_and_start_again(served: tuple[Served, str]) -> None:
    """The lean path's write threads finish with the server's lifespan; an app served
    again starts new ones."""
    app, sid = served
    assert app.app.events is not None
    workers = app.app.events.workers
    for round_ in range(2):
        with TestClient(app.app) as client:
            for i in range(3):
                body = json.dumps({"events": [entry(sid, f"r{round_}-{i}")]}).encode()
                answer = client.post("/v1/events", content=body, headers=READ)
                assert answer.status_code == 200, answer.text
            threads = list(workers.threads)
            assert threads and all(thread.is_alive() for thread in threads)
        assert not workers.threads and not any(thread.is_alive() for thread in threads)
