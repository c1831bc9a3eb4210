"""The HTTP API against a real server process, on SQLite and PostgreSQL.

One server per backend serves the whole module (see http_server.py); each test works on
keys of its own (a fresh agent id), so tests do not see each other's sessions. Scenarios
that break the database start servers of their own.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.server import UnsafeBind, serve
from tests.e2e.http_server import (
    RunningServer,
    free_port,
    http_server,
    sqlite_database,
    start_server,
)

__all__ = ["http_server"]  # the fixture, imported for pytest

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
JSON = {"content-type": "application/json"}
_ids = itertools.count()


# -- helpers ------------------------------------------------------------------------------


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def new_agent() -> str:
    return "a" + uuid.uuid4().hex[:10]


def new_key(channel: str = "telegram", tail: str = "direct:42") -> str:
    return f"agent:{new_agent()}:{channel}:{tail}"


def path(key: str, suffix: str = "") -> str:
    """Keys travel URL-encoded: ':' as %3A and '/' as %2F."""
    return f"/v1/sessions/{quote(key, safe='')}{suffix}"


def event(kind: str, key: str, sid: str, *, t: float = 1, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "eventId": f"http-{uuid.uuid4().hex[:8]}-{next(_ids)}",
        "sessionKey": key,
        "sessionId": sid,
        "occurredAt": at(t),
        "writer": fields.pop("writer", "runner"),
        **fields,
    }


def start(key: str, sid: str, run: str, t: float = 1, **kw: Any) -> dict[str, Any]:
    return event("run.started", key, sid, runId=run, trigger=kw.pop("trigger", "user"), t=t, **kw)


def end(key: str, sid: str, run: str, t: float = 2, **kw: Any) -> dict[str, Any]:
    return event("run.ended", key, sid, runId=run, outcome=kw.pop("outcome", "done"), t=t, **kw)


def entry(
    key: str, sid: str, entry_id: str, role: str = "user", parent: str | None = None, **kw: Any
) -> dict[str, Any]:
    body = {
        "id": entry_id,
        "parentId": parent,
        "role": role,
        "content": kw.pop("content", f"text of {entry_id}"),
        "timestamp": at(kw.pop("t", 1)),
    }
    return event("transcript.appended", key, sid, entry=body, **kw)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text[:2000])
    return response.json()


def error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:2000])
    body: dict[str, Any] = response.json()
    if code is not None:
        assert body["error"] == code, body
    return body


def resolve(client: httpx.Client, key: str, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = ok(client.post(path(key, "/resolve"), json=body))
    return result


def open_key(client: httpx.Client, key: str) -> str:
    return str(resolve(client, key, at=T0.isoformat())["session"]["sessionId"])


def record(client: httpx.Client, *events: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = ok(client.post("/v1/events", json={"events": list(events)}))[
        "results"
    ]
    assert [r["eventId"] for r in results] == [e["eventId"] for e in events]
    return results


def outcomes(results: list[dict[str, Any]]) -> list[str]:
    return [r["outcome"] for r in results]


def log_head(client: httpx.Client) -> int:
    health = ok(client.get("/healthz"))
    assert health["position"] == health["logHead"]  # the read models are current
    return int(health["logHead"])


def field_names(body: dict[str, Any]) -> list[str]:
    return [d["field"] for d in body["details"]]


@pytest.fixture
def admin(http_server: RunningServer) -> httpx.Client:
    return http_server.client("admin")


@pytest.fixture
def reader(http_server: RunningServer) -> httpx.Client:
    return http_server.client("read")


# -- every endpoint -----------------------------------------------------------------------


def test_health_metrics_and_openapi(http_server: RunningServer, reader: httpx.Client) -> None:
    anonymous = http_server.client(None)
    health = ok(anonymous.get("/healthz"))  # probes need no token
    assert health["status"] == "ok" and health["position"] == health["logHead"]

    document = ok(anonymous.get("/openapi.json"))
    paths = document["paths"]
    for route, methods in {
        "/v1/events": {"post"},
        "/v1/sessions": {"get"},
        "/v1/sessions/{session_key}": {"get", "delete"},
        "/v1/sessions/{session_key}/resolve": {"post"},
        "/v1/sessions/{session_key}/reset": {"post"},
        "/v1/sessions/{session_key}/bindings/{provider}": {"put", "delete"},
        "/v1/sessions/{session_key}/transcript": {"get"},
        "/v1/sessions/{session_key}/audit": {"get"},
        "/v1/sessions/{session_key}/generations": {"get"},
        "/v1/runs/{run_id}": {"get"},
        "/v1/reports/status": {"get"},
        "/healthz": {"get"},
        "/metrics": {"get"},
    }.items():
        assert methods <= set(paths[route]), route

    error(anonymous.get("/metrics"), 401, "unauthorized")
    metrics = reader.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "sessionledger_http_requests_total" in metrics.text
    assert "sessionledger_projection_lag_events 0.0" in metrics.text


def test_a_gateway_conversation_over_every_read_endpoint(
    admin: httpx.Client, reader: httpx.Client
) -> None:
    agent = new_agent()
    key = f"agent:{agent}:telegram:direct:42"
    opened = resolve(reader, key, at=T0.isoformat())
    assert (opened["created"], opened["rotated"], opened["reason"]) == (True, False, "new")
    sid = opened["session"]["sessionId"]
    assert opened["session"]["sessionKey"] == key
    assert (opened["session"]["agent"], opened["session"]["channel"]) == (agent, "telegram")

    again = resolve(reader, key, at=at(5))
    assert (again["created"], again["rotated"], again["session"]["sessionId"]) == (
        False,
        False,
        sid,
    )
    run = f"{agent}-r1"
    usage = {"input": 100, "output": 20, "cacheRead": 3, "cacheWrite": 4}
    results = record(
        reader,
        start(key, sid, run, t=10, model="opus", provider="anthropic"),
        entry(key, sid, "u1", t=11),
        entry(key, sid, "a1", role="assistant", parent="u1", t=12),
        end(key, sid, run, t=20, stopReason="end_turn", usage=usage),
    )
    assert outcomes(results) == ["applied"] * 4
    positions = [r["position"] for r in results]
    assert positions == sorted(positions) and len(set(positions)) == 4
    assert all(r["sessionId"] == r["currentSessionId"] == sid for r in results)

    row = ok(reader.get(path(key)))
    assert (row["sessionKey"], row["sessionId"], row["status"], row["hasActiveRun"]) == (
        key,
        sid,
        "done",
        False,
    )
    assert (row["entryCount"], row["resumable"], row["runtimeMs"], row["model"]) == (
        2,
        True,
        10_000,
        "opus",
    )
    assert (row["inputTokens"], row["outputTokens"]) == (100, 20)

    run_row = ok(reader.get(f"/v1/runs/{run}"))
    assert (run_row["sessionId"], run_row["status"], run_row["runtimeMs"]) == (sid, "done", 10_000)
    assert run_row["stopReason"] == "end_turn" and run_row["late"] is False

    transcript = ok(reader.get(path(key, "/transcript")))
    assert transcript["sessionIds"] == [sid]
    assert [(e["entryId"], e["parentId"], e["role"]) for e in transcript["entries"]] == [
        ("u1", None, "user"),
        ("a1", "u1", "assistant"),
    ]
    by_id = ok(reader.get(path(key, "/transcript"), params={"sessionId": sid}))
    assert by_id["entries"] == transcript["entries"]

    audit = ok(reader.get(path(key, "/audit")))
    assert audit["sessionKey"] == key
    kinds = [a["type"] for a in audit["entries"]]
    assert kinds[0] == "generation.opened"
    assert kinds[-4:] == ["run.started", "transcript.appended", "transcript.appended", "run.ended"]
    assert [a["position"] for a in audit["entries"][-4:]] == positions
    assert audit["entries"][-1]["after"]["status"] == "done"
    assert audit["entries"][-1]["before"]["status"] == "running"

    generations = ok(reader.get(path(key, "/generations")))
    assert [(g["sessionId"], g["state"]) for g in generations] == [(sid, "current")]

    listed = ok(reader.get("/v1/sessions", params={"agent": agent}))
    assert [v["sessionKey"] for v in listed["items"]] == [key] and listed["nextCursor"] is None

    report = ok(reader.get("/v1/reports/status", params={"stuckAfterMinutes": 5}))
    assert report["sessions"] >= 1 and report["stuckAfterMinutes"] == 5
    assert report["byStatus"].get("done", 0) >= 1


def test_keys_with_special_characters_travel_url_encoded(admin: httpx.Client) -> None:
    agent = new_agent()
    keys = [
        f"agent:{agent}:telegram:direct:42",
        f"agent:{agent}:web:direct:team/room 7?x=1&y=#2",  # '/', space, '?', '&', '#'
        f"agent:{agent}:slack:channel:ünïcødé/résumé",
        f"agent:{agent}:web:direct:100%25-literal%2F",  # a key that itself holds '%2F'
    ]
    for key in keys:
        sid = open_key(admin, key)
        assert ok(admin.get(path(key)))["sessionKey"] == key
        record(admin, entry(key, sid, "m1"), entry(key, sid, "m2", role="assistant", parent="m1"))
        assert ok(admin.get(path(key, "/transcript")))["sessionKey"] == key
        audit = ok(admin.get(path(key, "/audit")))
        assert audit["sessionKey"] == key
        assert [a["type"] for a in audit["entries"][-2:]] == ["transcript.appended"] * 2
        assert len(ok(admin.get(path(key, "/generations")))) == 1
        ok(admin.put(path(key, "/bindings/claude-cli"), json={"cliSessionId": "cli-1"}))
        ok(admin.delete(path(key, "/bindings/claude-cli"), params={"reason": "missing-transcript"}))
        reset = ok(admin.post(path(key, "/reset"), json={"expectedSessionId": sid}))
        assert reset["previousSessionId"] == sid and reset["session"]["sessionKey"] == key
    listed = ok(admin.get("/v1/sessions", params={"agent": agent}))
    assert sorted(v["sessionKey"] for v in listed["items"]) == sorted(keys)
    slash = keys[1]
    deleted = ok(admin.delete(path(slash)))
    assert deleted["sessionKey"] == slash
    error(admin.get(path(slash)), 404, "session-deleted")
    # The other key of the same prefix is untouched by the one with the slash.
    assert ok(admin.get(path(keys[0])))["sessionKey"] == keys[0]


def test_listing_filters_and_pages(admin: httpx.Client, reader: httpx.Client) -> None:
    agent = new_agent()
    keys = [f"agent:{agent}:telegram:direct:{i:03}" for i in range(5)]
    keys.append(f"agent:{agent}:slack:channel:c01")
    sids = {key: open_key(admin, key) for key in keys}
    record(admin, start(keys[1], sids[keys[1]], f"{agent}-run"))

    def listed(**params: Any) -> list[str]:
        page = ok(reader.get("/v1/sessions", params={"agent": agent, **params}))
        return [v["sessionKey"] for v in page["items"]]

    assert listed(status="running") == [keys[1]]
    assert listed(channel="slack") == [keys[5]]
    assert len(listed(channel="telegram")) == 5
    # Active means a user interaction within the window (or a running run), by the
    # interaction clock: these keys were opened "at" T0, long ago, so only the running one.
    assert listed(activeWithinMinutes=5) == [keys[1]]
    ok(admin.post(path(keys[3], "/resolve"), json={"interaction": "heartbeat"}))
    assert listed(activeWithinMinutes=5) == [keys[1]]  # heartbeats do not make it active
    ok(admin.post(path(keys[3], "/resolve"), json={}))  # a user message, now
    assert listed(activeWithinMinutes=5) == [keys[1], keys[3]]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"agent": agent, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = ok(reader.get("/v1/sessions", params=params))
        assert len(page["items"]) <= 2
        seen += [v["sessionKey"] for v in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted(keys)

    for bad in ({"status": "sleeping"}, {"limit": 0}, {"activeWithinMinutes": -1}):
        name = next(iter(bad))
        body = error(reader.get("/v1/sessions", params=bad), 422, "invalid-input")
        assert field_names(body) == [name], body


def test_bindings_set_and_dropped(admin: httpx.Client) -> None:
    key = new_key()
    open_key(admin, key)
    result = ok(admin.put(path(key, "/bindings/claude-cli"), json={"cliSessionId": "cli-9"}))
    assert result["outcome"] == "applied" and isinstance(result["position"], int)
    assert ok(admin.get(path(key)))["bindings"] == {"claude-cli": "cli-9"}
    ok(admin.delete(path(key, "/bindings/claude-cli"), params={"reason": "missing-transcript"}))
    assert ok(admin.get(path(key)))["bindings"] == {}
    body = error(admin.delete(path(key, "/bindings/claude-cli")), 422, "invalid-input")
    assert field_names(body) == ["provider"]
    body = error(admin.put(path(key, "/bindings/claude-cli"), json={}), 422)
    assert field_names(body) == ["cliSessionId"]
    body = error(admin.put(path(key, "/bindings/%01bad"), json={"cliSessionId": "x"}), 422)
    assert field_names(body) == ["provider"]
    error(admin.put(path(new_key(), "/bindings/p"), json={"cliSessionId": "x"}), 404)


def test_keys_that_look_like_sub_routes_are_not_misrouted(admin: httpx.Client) -> None:
    base = new_key()
    base_sid = open_key(admin, base)
    ok(admin.put(path(base, "/bindings/p"), json={"cliSessionId": "keep-me"}))
    tricky = [f"{base}/audit", f"{base}/bindings/p", f"{base}/reset", f"{base}/transcript"]
    for key in tricky:
        assert resolve(admin, key)["session"]["sessionKey"] == key
        assert ok(admin.get(path(key)))["sessionKey"] == key
        assert ok(admin.get(path(key, "/generations")))[0]["sessionKey"] == key
    # Deleting the key `<base>/bindings/p` deletes that key, not the binding p of <base>.
    assert ok(admin.delete(path(f"{base}/bindings/p")))["sessionKey"] == f"{base}/bindings/p"
    row = ok(admin.get(path(base)))
    assert (row["sessionId"], row["bindings"]) == (base_sid, {"p": "keep-me"})
    # Resetting `<base>/reset` leaves <base> alone.
    ok(admin.post(path(f"{base}/reset", "/reset"), json={}))
    assert ok(admin.get(path(base)))["sessionId"] == base_sid
    # An unencoded '/' is a different path, never a key holding a slash.
    error(admin.get(f"/v1/sessions/{quote(base, safe='')}/nothing/here"), 404, "not-found")
    # %1F is a control character even where the router stands it in for '/'.
    body = error(admin.post("/v1/sessions/a%1Fb/resolve", json={}), 422, "invalid-input")
    assert field_names(body) == ["sessionKey"]
    error(admin.get(f"/v1/runs/{quote('no/such/run', safe='')}"), 404, "not-found")


# -- auth -----------------------------------------------------------------------------------


def test_tokens_and_scopes(http_server: RunningServer) -> None:
    admin, reader = http_server.client("admin"), http_server.client("read")
    anonymous, stranger = http_server.client(None), http_server.client("not-a-token")
    key = new_key()
    sid = open_key(reader, key)  # resolve is an everyday gateway call: read scope
    record(reader, start(key, sid, f"{key}-r"))

    reads = [
        ("GET", path(key), None),
        ("GET", path(key, "/transcript"), None),
        ("GET", path(key, "/audit"), None),
        ("GET", path(key, "/generations"), None),
        ("GET", "/v1/sessions", None),
        ("GET", "/v1/reports/status", None),
        ("GET", "/metrics", None),
        ("POST", path(key, "/resolve"), {"at": at(2)}),
        ("POST", "/v1/events", {"events": [entry(key, sid, "m1")]}),
    ]
    admin_only = [
        ("POST", path(key, "/reset"), {"expectedSessionId": sid}),
        ("DELETE", path(key), None),
        ("PUT", path(key, "/bindings/claude-cli"), {"cliSessionId": "c"}),
        ("DELETE", path(key, "/bindings/claude-cli"), None),
    ]
    head = log_head(admin)
    for method, url, body in reads + admin_only:
        for client, reason in (
            (anonymous, "missing bearer token"),
            (stranger, "unknown bearer token"),
        ):
            response = client.request(method, url, json=body)
            assert error(response, 401, "unauthorized")["message"] == reason
            assert response.headers["www-authenticate"] == "Bearer"
    wrong_scheme = httpx.Client(base_url=http_server.url, auth=httpx.BasicAuth("u", "p"))
    with wrong_scheme:
        assert wrong_scheme.get(path(key)).status_code == 401
    for method, url, body in admin_only:
        error(reader.request(method, url, json=body), 403, "forbidden")
    assert log_head(admin) == head, "a refused request recorded something"
    assert ok(admin.get(path(key)))["sessionId"] == sid

    for method, url, body in reads:
        assert reader.request(method, url, json=body).status_code == 200, url
        assert admin.request(method, url, json=body).status_code == 200, url
    ok(admin.post(path(key, "/reset"), json={"expectedSessionId": sid}))


# -- bad input: 400, 413, 422, 404, 409 -------------------------------------------------------


def requests_counted(client: httpx.Client, status: int) -> float:
    """sessionledger_http_requests_total for POST /v1/events answered `status`."""
    series = f'{{method="POST",route="/v1/events",status="{status}"}}'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("sessionledger_http_requests_total" + series):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_events_are_answered_per_event_and_refused_as_documented(
    http_server: RunningServer, reader: httpx.Client
) -> None:
    """POST /v1/events: one result per event, a retry answered from the receipts; the
    documented refusals (400, 401, 413, 422) for whatever cannot be recorded."""
    key = new_key()
    sid = open_key(reader, key)
    batch = [
        entry(key, sid, "m1"),
        entry(key, sid, "m2", parent="m1"),
        entry(key, sid, "m9", parent="nope"),
        end(key, sid, "never-started"),
    ]
    body = json.dumps({"events": batch}).encode()
    first = reader.post("/v1/events", content=body, headers=JSON)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.headers["server-timing"].startswith("app;dur=")
    again = reader.post("/v1/events", content=body, headers=JSON)
    recorded, retried = first.json()["results"], again.json()["results"]
    assert outcomes(recorded) == ["applied", "applied", "rejected", "rejected"]
    for one, other in zip(recorded, retried, strict=True):
        if one["outcome"] == "rejected":  # nothing was recorded: decided again, alike
            assert other == one
        else:
            position = one["position"]
            reason = f"duplicate eventId: already recorded at position {position}"
            assert other == {**one, "reason": reason}

    # any JSON content type is read as JSON
    more = json.dumps({"events": [entry(key, sid, "m3", parent="m2")]}).encode()
    charset = {"content-type": "application/json; charset=utf-8"}
    assert outcomes(ok(reader.post("/v1/events", content=more, headers=charset))["results"]) == [
        "applied"
    ]

    # 1000 events (the most a request may hold) are recorded; 1001 are refused
    thousand = [entry(key, sid, f"k{i}") for i in range(1000)]
    body = json.dumps({"events": thousand}).encode()
    assert set(outcomes(ok(reader.post("/v1/events", content=body, headers=JSON))["results"])) == {
        "applied"
    }
    too_many = json.dumps({"events": [*thousand, entry(key, sid, "k1000")]}).encode()
    refused = error(reader.post("/v1/events", content=too_many, headers=JSON), 413, "too-large")
    assert refused["details"][0]["field"] == "events"

    # malformed JSON is 400; JSON that is not a batch of events is 422, naming the field
    for raw, status, field in (
        (b"{", 400, None),
        (b"\xff\xfe", 400, None),
        (b"", 422, "body"),
        (b"[]", 422, "body"),
        (b'{"events": []}', 422, "events"),
        (b'{"events": "nope"}', 422, "events"),
        (json.dumps({"events": [{**batch[0], "type": "x"}]}).encode(), 422, "events[0].type"),
        (json.dumps({"events": [{**batch[0], "surprise": 1}]}).encode(), 422, "events[0].surprise"),
    ):
        answer = reader.post("/v1/events", content=raw, headers=JSON)
        if field is None:
            error(answer, status, "malformed-json")
        else:
            assert error(answer, status, "invalid-input")["details"][0]["field"] == field, raw

    # another content type, or none: refused (the route reads only JSON bodies)
    one = json.dumps({"events": [entry(key, sid, "m8", parent="nope")]}).encode()
    for headers in ({"content-type": "text/plain"}, {}):
        answer = reader.post("/v1/events", content=one, headers=headers)
        assert error(answer, 422, "invalid-input")["details"][0]["field"] == "body"

    # auth: no token, an unknown one, another scheme; an admin token may record too
    anonymous = http_server.client(None)
    for headers in (
        {},
        {"authorization": "Bearer not-a-token"},
        {"authorization": "Basic dTpw"},
        {"authorization": "Bearer"},
    ):
        answer = anonymous.post("/v1/events", content=one, headers={**JSON, **headers})
        assert error(answer, 401, "unauthorized") and answer.headers["www-authenticate"] == "Bearer"
    admin = http_server.client("admin")
    assert outcomes(ok(admin.post("/v1/events", content=one, headers=JSON))["results"]) == [
        "rejected"
    ]

    # a body over 16 MiB, declared or not (chunked): 413 either way
    oversized = b'{"events": [' + b" " * (16 * 1024 * 1024) + b"]}"

    def chunks() -> Iterator[bytes]:
        for start_at in range(0, len(oversized), 1024 * 1024):
            yield oversized[start_at : start_at + 1024 * 1024]

    error(reader.post("/v1/events", content=oversized, headers=JSON), 413, "too-large")
    error(reader.post("/v1/events", content=chunks(), headers=JSON), 413, "too-large")
    # a chunked body within the limit is gathered and recorded
    small = json.dumps({"events": [entry(key, sid, "m4", parent="m3")]}).encode()
    pieces = iter([small[:10], small[10:]])
    assert outcomes(ok(reader.post("/v1/events", content=pieces, headers=JSON))["results"]) == [
        "applied"
    ]


def test_events_requests_are_counted_once_by_status(
    http_server: RunningServer, reader: httpx.Client
) -> None:
    """/metrics counts each POST /v1/events under the route's label and its status, once
    (200, 400, 401, 413 and 422); the body limit refuses an oversized body before
    anything counts it."""
    key = new_key()
    sid = open_key(reader, key)
    anonymous = http_server.client(None)
    oversized = b'{"events": [' + b" " * (16 * 1024 * 1024) + b"]}"
    cases: list[tuple[httpx.Client, bytes, int]] = [
        (reader, json.dumps({"events": [entry(key, sid, f"c{uuid.uuid4().hex}")]}).encode(), 200),
        (reader, b'{"events": []}', 422),
        (reader, b"{", 400),
        (reader, json.dumps({"events": [entry(key, sid, "x")] * 1001}).encode(), 413),
        (reader, oversized, 413),
        (anonymous, json.dumps({"events": [entry(key, sid, "y")]}).encode(), 401),
    ]
    for client, body, status in cases:
        before = requests_counted(reader, status)
        assert client.post("/v1/events", content=body, headers=JSON).status_code == status
        counted = requests_counted(reader, status) - before
        assert counted == (0 if body is oversized else 1), (status, counted)


def test_malformed_json_is_400_and_records_nothing(admin: httpx.Client) -> None:
    key = new_key()
    open_key(admin, key)
    head = log_head(admin)
    headers = {"content-type": "application/json"}
    for raw in (b'{"events": [', b"not json", b'{"events": [}]}', b"\xff\xfe"):
        body = error(admin.post("/v1/events", content=raw, headers=headers), 400, "malformed-json")
        assert body["message"] == "request body is not valid JSON"
    error(admin.post(path(key, "/resolve"), content=b"{", headers=headers), 400, "malformed-json")
    error(admin.post(path(key, "/reset"), content=b"{", headers=headers), 400, "malformed-json")
    assert log_head(admin) == head


def test_bad_input_is_422_naming_the_field(admin: httpx.Client) -> None:
    key = new_key()
    sid = open_key(admin, key)
    head = log_head(admin)

    good = [entry(key, sid, f"m{i}") for i in range(3)]
    bad_role = entry(key, sid, "m3")
    bad_role["entry"]["role"] = "wizard"
    body = error(admin.post("/v1/events", json={"events": [*good, bad_role]}), 422)
    assert body["error"] == "invalid-input"
    assert field_names(body) == ["events[3].entry.role"]
    assert body["message"].startswith("events[3].entry.role")

    cases: list[tuple[dict[str, Any], str]] = [
        ({**good[0], "type": "run.exploded"}, "events[0].type"),
        ({k: v for k, v in good[0].items() if k != "eventId"}, "events[0].eventId"),
        ({**start(key, sid, "r"), "trigger": "telepathy"}, "events[0].trigger"),
        ({**end(key, sid, "r"), "outcome": "meh"}, "events[0].outcome"),
        ({**good[0], "occurredAt": "yesterday"}, "events[0].occurredAt"),
        ({**good[0], "occurredAt": "2026-11-21T10:00:00"}, "events[0].occurredAt"),  # naive
        # No UTC date a datetime can hold (0000-12-31, 10000-01-01): refused, not a 500.
        ({**good[0], "occurredAt": "0001-01-01T00:00:00+01:00"}, "events[0].occurredAt"),
        (
            {**good[0], "entry": {**good[0]["entry"], "timestamp": "9999-12-31T23:30:00-01:00"}},
            "events[0].entry.timestamp",
        ),
        ({**good[0], "sessionKey": "x" * 513}, "events[0].sessionKey"),
        ({**good[0], "sessionKey": "bad\nkey"}, "events[0].sessionKey"),
        ({**good[0], "writer": "intruder"}, "events[0].writer"),
        ({**good[0], "surprise": 1}, "events[0].surprise"),
    ]
    for bad, field in cases:
        body = error(admin.post("/v1/events", json={"events": [bad]}), 422, "invalid-input")
        assert field in field_names(body), (field, body)
    for payload, field in (
        ({}, "events"),
        ({"events": []}, "events"),
        ({"events": "nope"}, "events"),
    ):
        body = error(admin.post("/v1/events", json=payload), 422, "invalid-input")
        assert field_names(body) == [field], body

    resolve_cases: list[tuple[dict[str, Any], str]] = [
        ({"interaction": "telepathy"}, "interaction"),
        ({"at": "2026-11-21T10:00:00"}, "at"),
        ({"at": "0001-01-01T00:00:00+01:00"}, "at"),
        ({"policy": {"mode": "weekly"}}, "policy.mode"),
        ({"policy": {"mode": "daily", "timezone": "Mars/Olympus"}}, "policy.timezone"),
    ]
    for payload, field in resolve_cases:
        body = error(admin.post(path(key, "/resolve"), json=payload), 422, "invalid-input")
        assert field_names(body) == [field], body
    body = error(admin.post(path(key, "/reset"), json={"reason": "boredom"}), 422)
    assert field_names(body) == ["reason"]
    body = error(admin.post(path(key, "/reset"), json={"sessionId": sid}), 422)
    assert field_names(body) == ["sessionId"]  # sessionIds are never reused
    body = error(admin.post(path("k" * 513, "/resolve"), json={}), 422)
    assert field_names(body) == ["sessionKey"]
    late = {"at": "9999-12-31T23:30:00-01:00"}
    body = error(admin.post(path(key, "/reset"), json=late), 422)
    assert field_names(body) == ["at"]
    body = error(admin.put(path(key, "/bindings/claude"), json={**late, "cliSessionId": "x"}), 422)
    assert field_names(body) == ["at"]
    body = error(admin.get(path(key, "/audit"), params={"asOf": "0001-01-01T00:00:00+01:00"}), 422)
    assert field_names(body) == ["asOf"]
    assert log_head(admin) == head, "bad input recorded something"


def test_limits_are_413(admin: httpx.Client) -> None:
    key = new_key()
    sid = open_key(admin, key)
    head = log_head(admin)

    batch = [entry(key, sid, f"m{i}") for i in range(1001)]
    body = error(admin.post("/v1/events", json={"events": batch}), 413, "too-large")
    assert field_names(body) == ["events"]

    big = entry(key, sid, "big", content="x" * (256 * 1024 + 1))
    body = error(admin.post("/v1/events", json={"events": [entry(key, sid, "ok"), big]}), 413)
    assert body["error"] == "too-large"
    assert field_names(body) == ["events[1].entry"], body

    oversized = b'{"events": [' + b" " * (16 * 1024 * 1024) + b"]}"
    headers = {"content-type": "application/json"}
    body = error(admin.post("/v1/events", content=oversized, headers=headers), 413, "too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start_at in range(0, len(oversized), 1024 * 1024):
            yield oversized[start_at : start_at + 1024 * 1024]

    error(admin.post("/v1/events", content=chunks(), headers=headers), 413, "too-large")
    assert log_head(admin) == head

    # The limits themselves are accepted: 1000 events and an entry of exactly 256 KiB.
    at_limit = [entry(key, sid, f"m{i}") for i in range(1000)]
    assert set(outcomes(record(admin, *at_limit))) == {"applied"}
    largest = entry(key, sid, "largest", content="y" * (256 * 1024 - 2))  # 2 bytes of quotes
    assert outcomes(record(admin, largest)) == ["applied"]


def test_unknown_and_deleted_keys_are_404(admin: httpx.Client) -> None:
    unknown = new_key()
    for method, suffix, request_body in (
        ("GET", "", None),
        ("GET", "/transcript", None),
        ("GET", "/audit", None),
        ("GET", "/generations", None),
        ("POST", "/reset", {}),
        ("DELETE", "", None),
        ("PUT", "/bindings/p", {"cliSessionId": "c"}),
        ("DELETE", "/bindings/p", None),
    ):
        response = admin.request(method, path(unknown, suffix), json=request_body)
        assert error(response, 404)["error"] in {"unknown-session", "not-found"}, suffix
    body = error(admin.get(path(unknown)), 404, "unknown-session")
    assert body["details"] == {"sessionKey": unknown}
    error(admin.get("/v1/runs/no-such-run"), 404, "not-found")
    error(admin.get("/v1/no-such-route"), 404, "not-found")
    error(admin.put("/healthz"), 405, "method-not-allowed")

    key = new_key()
    sid = open_key(admin, key)
    assert ok(admin.delete(path(key), params={"expectedSessionId": sid})) == {
        "sessionKey": key,
        "deletedSessionId": sid,
    }
    body = error(admin.get(path(key)), 404, "session-deleted")
    assert body["details"] == {"sessionKey": key, "sessionId": sid}
    error(admin.post(path(key, "/reset"), json={}), 404)
    error(admin.delete(path(key)), 404)
    error(admin.put(path(key, "/bindings/p"), json={"cliSessionId": "c"}), 404, "session-deleted")
    error(admin.post(path(key, "/resolve"), json={"interaction": "heartbeat"}), 404)
    # The history of a deleted key stays readable for the auditor.
    assert [g["state"] for g in ok(admin.get(path(key, "/generations")))] == ["deleted"]
    assert ok(admin.get(path(key, "/audit")))["entries"][-1]["type"] == "session.deleted"


def test_compare_and_swap_mismatch_is_409(admin: httpx.Client) -> None:
    key = new_key()
    sid = open_key(admin, key)
    head = log_head(admin)
    body = error(admin.post(path(key, "/reset"), json={"expectedSessionId": "stale"}), 409)
    assert body["error"] == "session-changed"
    assert body["details"] == {
        "sessionKey": key,
        "expectedSessionId": "stale",
        "currentSessionId": sid,
    }
    body = error(admin.delete(path(key), params={"expectedSessionId": "stale"}), 409)
    assert body["details"]["currentSessionId"] == sid
    assert log_head(admin) == head
    assert ok(admin.get(path(key)))["sessionId"] == sid  # neither a silent success nor a change


# -- idempotency and batches ------------------------------------------------------------------


def test_mixed_batch_answers_per_event_in_request_order(admin: httpx.Client) -> None:
    key = new_key()
    s1 = open_key(admin, key)
    old_run, new_run = f"{key}-old", f"{key}-new"
    record(admin, start(key, s1, old_run))
    s2 = ok(admin.post(path(key, "/reset"), json={"expectedSessionId": s1}))["sessionId"]
    first = entry(key, s2, "hello")
    record(admin, first)

    batch = [
        start(key, s2, new_run, t=3),  # applied
        end(key, s1, old_run, t=4),  # archived: its generation was rotated
        {**first, "eventId": f"{first['eventId']}-resent"},  # duplicate: same entry, new id
        entry(key, s2, "orphan", parent="no-such-entry"),  # rejected: broken parentId
        entry(new_key(), "s-unknown", "x"),  # rejected: unknown key
        end(key, s2, new_run, t=5),  # applied
    ]
    results = record(admin, *batch)
    assert outcomes(results) == [
        "applied",
        "archived",
        "duplicate",
        "rejected",
        "rejected",
        "applied",
    ]
    applied, archived, duplicate, orphan, unknown, ended = results
    assert (archived["sessionId"], archived["currentSessionId"]) == (s1, s2)
    assert applied["sessionId"] == applied["currentSessionId"] == s2
    assert duplicate["position"] is None and orphan["position"] is None
    assert orphan["reason"].startswith("entry.parentId")
    assert unknown["reason"].startswith("sessionKey")
    assert applied["position"] < archived["position"] < ended["position"]

    # The retry of the whole batch: the same answers, nothing new recorded.
    head = log_head(admin)
    audit_length = len(ok(admin.get(path(key, "/audit")))["entries"])
    retried = record(admin, *batch)

    def stable(rs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        fields = ("eventId", "outcome", "position", "sessionId", "currentSessionId")
        return [tuple(r[f] for f in fields) for r in rs]

    assert stable(retried) == stable(results)
    assert log_head(admin) == head
    assert len(ok(admin.get(path(key, "/audit")))["entries"]) == audit_length
    row = ok(admin.get(path(key)))
    assert (row["sessionId"], row["entryCount"], row["status"]) == (s2, 1, "done")


def test_retried_appends_are_not_duplicated(admin: httpx.Client) -> None:
    key = new_key()
    sid = open_key(admin, key)
    batch = [entry(key, sid, "m1"), entry(key, sid, "m2", role="assistant", parent="m1")]
    first = record(admin, *batch)
    head = log_head(admin)
    for _ in range(3):  # a gateway retrying after a timeout
        assert [(r["outcome"], r["position"]) for r in record(admin, *batch)] == [
            (r["outcome"], r["position"]) for r in first
        ]
    within = record(admin, batch[0], batch[0])  # the same event twice in one request
    assert [r["position"] for r in within] == [first[0]["position"]] * 2
    reused = {**batch[0], "entry": {**batch[0]["entry"], "content": "different"}}
    (clash,) = record(admin, reused)  # an eventId reused for another fact is not a retry
    assert clash["outcome"] == "rejected" and clash["reason"].startswith("eventId")
    assert log_head(admin) == head
    assert ok(admin.get(path(key)))["entryCount"] == 2
    assert len(ok(admin.get(path(key, "/transcript")))["entries"]) == 2


# -- Field failures (docs/invariants.md), over HTTP ------------------------------------------


def test_stale_events_after_a_reset_do_not_overwrite_the_new_row(admin: httpx.Client) -> None:
    key = new_key()
    s1 = open_key(admin, key)
    run = f"{key}-r1"
    record(admin, start(key, s1, run, t=1))
    s2 = ok(admin.post(path(key, "/reset"), json={"reason": "reset"}))["sessionId"]
    usage = {"input": 7, "output": 7, "cacheRead": 0, "cacheWrite": 0}
    late = record(
        admin,
        event("run.errored", key, s1, runId=run, error="boom", t=9, usage=usage),
        entry(key, s1, "late", writer="runner"),
    )
    assert outcomes(late) == ["archived", "archived"]
    assert {r["currentSessionId"] for r in late} == {s2}
    row = ok(admin.get(path(key)))
    assert (row["sessionId"], row["status"], row["hasActiveRun"], row["lastError"]) == (
        s2,
        "new",
        False,
        None,
    )
    assert (row["inputTokens"], row["entryCount"], row["previousSessionId"]) == (0, 0, s1)
    old = {g["sessionId"]: g for g in ok(admin.get(path(key, "/generations")))}[s1]
    assert (old["state"], old["status"]) == ("archived", "failed")
    assert ok(admin.get(f"/v1/runs/{run}"))["late"] is True
    dids = [a["did"] for a in ok(admin.get(path(key, "/audit")))["entries"][-2:]]
    assert all("archived" in did for did in dids), dids


def test_a_completed_run_is_never_left_running(admin: httpx.Client) -> None:
    key = new_key()
    sid = open_key(admin, key)
    r1, r2 = f"{key}-r1", f"{key}-r2"
    record(admin, start(key, sid, r1, t=1), start(key, sid, r2, t=2))
    record(admin, end(key, sid, r2, t=3))
    row = ok(admin.get(path(key)))
    assert (row["status"], row["activeRunIds"], row["endedAt"]) == ("running", [r1], None)
    record(admin, end(key, sid, r1, t=6, outcome="timeout"))
    for _ in range(2):  # and again after an unrelated write folded the row once more
        row = ok(admin.get(path(key)))
        assert (row["status"], row["hasActiveRun"], row["activeRunIds"]) == ("timeout", False, [])
        assert row["endedAt"] is not None and row["runtimeMs"] == 5000
        record(admin, entry(key, sid, f"e{uuid.uuid4().hex[:6]}", writer="heartbeat"))
    assert ok(admin.get(f"/v1/runs/{r1}"))["status"] == "timeout"
    report = ok(admin.get("/v1/reports/status"))
    assert r1 not in {r["runId"] for r in report["activeRuns"]}


def test_a_terminal_event_with_a_skewed_clock_is_accepted(admin: httpx.Client) -> None:
    key = new_key()
    sid = open_key(admin, key)
    run = f"{key}-r"
    record(admin, start(key, sid, run, t=100))
    (ended,) = record(admin, end(key, sid, run, t=5))  # the reporter's clock is behind
    assert ended["outcome"] == "applied"
    row = ok(admin.get(path(key)))
    assert (row["status"], row["runtimeMs"], row["endedAt"] == row["startedAt"]) == (
        "done",
        0,
        True,
    )


def test_a_deleted_session_is_not_resurrected(admin: httpx.Client) -> None:
    agent = new_agent()
    key = f"agent:{agent}:telegram:direct:1"
    sid = open_key(admin, key)
    run = f"{agent}-r"
    record(admin, start(key, sid, run))
    ok(admin.delete(path(key), params={"expectedSessionId": sid}))
    late = record(
        admin,
        end(key, sid, run),
        entry(key, sid, "hb", writer="heartbeat"),
        event("binding.set", key, sid, provider="claude-cli", cliSessionId="c", writer="cron"),
    )
    assert outcomes(late) == ["archived"] * 3
    assert all(r["currentSessionId"] is None for r in late)
    error(admin.get(path(key)), 404, "session-deleted")
    error(admin.post(path(key, "/resolve"), json={"interaction": "heartbeat"}), 404)
    error(admin.post(path(key, "/resolve"), json={"interaction": "cron"}), 404)
    assert ok(admin.get("/v1/sessions", params={"agent": agent}))["items"] == []
    (generation,) = ok(admin.get(path(key, "/generations")))
    assert (generation["state"], generation["status"]) == ("deleted", "done")
    # A user writing again starts a new conversation: explicit, not a resurrection.
    again = resolve(admin, key)
    assert again["session"]["sessionId"] != sid and again["session"]["previousSessionId"] is None


def test_reset_racing_a_replacement_is_409_not_success(http_server: RunningServer) -> None:
    admin = http_server.client("admin")
    key = new_key()
    s1 = open_key(admin, key)
    # Two admins saw s1; the first reset wins, the second must not silently succeed.
    s2 = ok(admin.post(path(key, "/reset"), json={"expectedSessionId": s1}))["sessionId"]
    body = error(admin.post(path(key, "/reset"), json={"expectedSessionId": s1}), 409)
    assert body["details"]["currentSessionId"] == s2
    body = error(admin.delete(path(key), params={"expectedSessionId": s1}), 409)
    assert body["details"]["currentSessionId"] == s2

    # Truly concurrent: four resets expecting s2, from four connections at once.
    barrier = threading.Barrier(4)

    def racer(_: int) -> httpx.Response:
        client = http_server.client("admin")
        barrier.wait(timeout=30)
        return client.post(path(key, "/reset"), json={"expectedSessionId": s2})

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(racer, range(4)))
    winners = [r.json() for r in responses if r.status_code == 200]
    losers = [r.json() for r in responses if r.status_code != 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert all(loser["error"] == "session-changed" for loser in losers)
    s3 = winners[0]["sessionId"]
    assert {loser["details"]["currentSessionId"] for loser in losers} == {s3}
    assert ok(admin.get(path(key)))["sessionId"] == s3
    assert len(ok(admin.get(path(key, "/generations")))) == 3


def test_idle_rollover_keeps_bindings_and_history(admin: httpx.Client) -> None:
    key = new_key()
    idle = {"mode": "idle", "idleMinutes": 30}
    s1 = resolve(admin, key, at=T0.isoformat(), policy=idle)["session"]["sessionId"]
    ok(admin.put(path(key, "/bindings/claude-cli"), json={"cliSessionId": "cli-123"}))
    record(
        admin,
        event("overrides.changed", key, s1, overrides={"model": "opus"}, writer="admin"),
        entry(key, s1, "m1"),
        entry(key, s1, "m2", role="assistant", parent="m1"),
    )
    fresh = resolve(admin, key, at=(T0 + timedelta(minutes=29)).isoformat(), policy=idle)
    assert not fresh["rotated"]
    later = (T0 + timedelta(minutes=29 + 31)).isoformat()
    rolled = resolve(admin, key, at=later, policy=idle)
    assert (rolled["rotated"], rolled["reason"], rolled["previousSessionId"]) == (True, "idle", s1)
    row = rolled["session"]
    assert (row["previousSessionId"], row["bindings"], row["overrides"]) == (
        s1,
        {"claude-cli": "cli-123"},
        {"model": "opus"},
    )
    s2 = row["sessionId"]
    record(admin, entry(key, s2, "m3"))
    lineage = ok(admin.get(path(key, "/transcript"), params={"lineage": "true"}))
    assert lineage["sessionIds"] == [s1, s2]
    assert [(e["sessionId"], e["entryId"]) for e in lineage["entries"]] == [
        (s1, "m1"),
        (s1, "m2"),
        (s2, "m3"),
    ]
    assert [e["entryId"] for e in ok(admin.get(path(key, "/transcript")))["entries"]] == ["m3"]
    old = ok(admin.get(path(key, "/transcript"), params={"sessionId": s1}))
    assert [e["entryId"] for e in old["entries"]] == ["m1", "m2"]
    # A hard reset carries nothing but the lineage link.
    hard = ok(admin.post(path(key, "/reset"), json={"reason": "reset"}))["session"]
    assert (hard["previousSessionId"], hard["bindings"], hard["overrides"]) == (s2, {}, {})


def test_resumable_only_with_an_assistant_entry(admin: httpx.Client) -> None:
    key = new_key(channel="cron", tail="nightly")
    sid = open_key(admin, key)
    run = f"{key}-cron"
    record(admin, start(key, sid, run, trigger="cron", writer="cron"))
    record(admin, entry(key, sid, "b1", role="bashExecution", writer="cron"), end(key, sid, run))
    assert ok(admin.get(path(key)))["resumable"] is False
    record(admin, entry(key, sid, "t1", role="toolResult", parent="b1"))
    assert ok(admin.get(path(key)))["resumable"] is False
    record(admin, entry(key, sid, "a1", role="assistant", parent="t1"))
    assert ok(admin.get(path(key)))["resumable"] is True
    # A fresh generation starts over: not resumable until its own assistant entry.
    reset = ok(admin.post(path(key, "/reset"), json={}))
    assert reset["session"]["resumable"] is False


def test_co_tenant_writes_are_not_a_takeover(http_server: RunningServer) -> None:
    admin = http_server.client("admin")
    key = new_key()
    sid = open_key(admin, key)
    record(admin, start(key, sid, f"{key}-run"))
    writers = ["runner", "heartbeat", "cron", "ingress"]
    barrier = threading.Barrier(len(writers))

    def tenant(writer: str) -> list[dict[str, Any]]:
        client = http_server.client("read")
        barrier.wait(timeout=30)
        results: list[dict[str, Any]] = []
        for i in range(5):
            results += record(client, entry(key, sid, f"{writer}-{i}", writer=writer))
        return results

    with ThreadPoolExecutor(len(writers)) as pool:
        everyone = [r for results in pool.map(tenant, writers) for r in results]
    assert len(everyone) == 20
    assert {(r["outcome"], r["sessionId"], r["currentSessionId"]) for r in everyone} == {
        ("applied", sid, sid)
    }
    assert len({r["position"] for r in everyone}) == 20
    row = ok(admin.get(path(key)))
    assert (row["sessionId"], row["entryCount"], row["status"]) == (sid, 20, "running")


def test_heartbeats_do_not_keep_a_session_fresh(admin: httpx.Client) -> None:
    key = new_key()
    idle = {"mode": "idle", "idleMinutes": 30}
    s1 = resolve(admin, key, at=T0.isoformat(), policy=idle)["session"]["sessionId"]
    for minutes in (20, 40, 60, 120):
        for interaction in ("heartbeat", "cron", "system"):
            beat = resolve(
                admin,
                key,
                at=(T0 + timedelta(minutes=minutes)).isoformat(),
                interaction=interaction,
                policy=idle,
            )
            assert not beat["rotated"] and beat["session"]["sessionId"] == s1
    record(admin, entry(key, s1, "hb", writer="heartbeat", t=3600))
    row = ok(admin.get(path(key)))
    assert datetime.fromisoformat(row["lastInteractionAt"].replace("Z", "+00:00")) == T0
    user = resolve(admin, key, at=(T0 + timedelta(minutes=121)).isoformat(), policy=idle)
    assert (user["rotated"], user["reason"]) == (True, "idle")


def test_a_broken_parent_id_is_rejected(admin: httpx.Client) -> None:
    key = new_key()
    s1 = open_key(admin, key)
    record(admin, entry(key, s1, "root"))
    s2 = ok(admin.post(path(key, "/reset"), json={}))["sessionId"]
    head = log_head(admin)
    results = record(
        admin,
        entry(key, s2, "child", parent="missing"),
        entry(key, s2, "cross", parent="root"),  # names an entry of another generation
    )
    assert outcomes(results) == ["rejected", "rejected"]
    assert all(r["reason"].startswith("entry.parentId") for r in results)
    assert log_head(admin) == head
    assert ok(admin.get(path(key)))["entryCount"] == 0
    (linked,) = record(admin, entry(key, s2, "first"))
    assert linked["outcome"] == "applied"


# -- the store unavailable: 503, nothing half-written, the retry succeeds ---------------------


def _locked_sqlite_is_503(server: RunningServer, database: Path) -> None:
    client = server.client("admin")
    key = new_key()
    sid = open_key(client, key)
    batch = [start(key, sid, f"{key}-r"), entry(key, sid, "m1")]
    head = log_head(client)
    holder = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        response = client.post("/v1/events", json={"events": batch})
        assert error(response, 503, "store-unavailable")["message"].startswith(
            "database unavailable"
        )
        assert response.headers["retry-after"] == "1"
        error(client.post(path(key, "/reset"), json={}), 503, "store-unavailable")
    finally:
        holder.rollback()
        holder.close()
    assert log_head(client) == head, "half-written"
    retried = record(client, *batch)
    assert outcomes(retried) == ["applied", "applied"]
    again = record(client, *batch)
    assert [r["position"] for r in again] == [r["position"] for r in retried]
    assert ok(client.get(path(key)))["entryCount"] == 1


def test_a_locked_sqlite_database_is_503_and_the_retry_succeeds(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path / "db")
    server = start_server(url, tmp_path, busy_timeout=1.0)
    try:
        _locked_sqlite_is_503(server, tmp_path / "db" / "ledger.db")
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


def test_a_removed_sqlite_database_is_503(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path / "db")
    server = start_server(url, tmp_path)
    try:
        client = server.client("admin")
        key = new_key()
        sid = open_key(client, key)
        shutil.rmtree(tmp_path / "db")
        # Pooled connections still hold the unlinked file: a write must not be acknowledged.
        response = client.post("/v1/events", json={"events": [entry(key, sid, "m1")]})
        error(response, 503, "store-unavailable")
        error(client.post(path(key, "/reset"), json={}), 503, "store-unavailable")
        error(client.post(path(new_key(), "/resolve"), json={}), 503, "store-unavailable")
    finally:
        server.stop()


def _admin_connection(server: Any) -> Any:
    import psycopg

    return psycopg.connect(
        f"host={server.host} port={server.port} user={server.user} dbname=postgres",
        autocommit=True,
    )


@pytest.mark.postgres
def test_postgres_refusing_connections_is_503_and_the_retry_succeeds(
    postgres_server: Any, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    server = start_server(url, tmp_path)
    try:
        client = server.client("admin")
        key = new_key()
        sid = open_key(client, key)
        batch = [start(key, sid, f"{key}-r"), entry(key, sid, "m1")]
        head = log_head(client)
        with _admin_connection(postgres_server) as pg:
            pg.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            pg.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            try:
                for response in (
                    client.post("/v1/events", json={"events": batch}),
                    client.get(path(key)),
                    client.post(path(key, "/resolve"), json={}),
                    client.get("/healthz"),
                ):
                    error(response, 503, "store-unavailable")
                    assert response.headers["retry-after"] == "1"
            finally:
                pg.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert log_head(client) == head, "half-written"
        retried = record(client, *batch)
        assert outcomes(retried) == ["applied", "applied"]
        assert [r["position"] for r in record(client, *batch)] == [r["position"] for r in retried]
        assert ok(client.get(path(key)))["entryCount"] == 1
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


@pytest.mark.postgres
def test_a_dropped_postgres_database_is_503(postgres_server: Any, tmp_path: Path) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    server = start_server(url, tmp_path)
    try:
        client = server.client("admin")
        key = new_key()
        sid = open_key(client, key)
        with _admin_connection(postgres_server) as pg:
            pg.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for response in (
            client.post("/v1/events", json={"events": [entry(key, sid, "m1")]}),
            client.get(path(key)),
            client.get("/v1/sessions"),
            client.post(path(key, "/reset"), json={}),
            client.get("/healthz"),
        ):
            error(response, 503, "store-unavailable")
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


# -- binding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_serve_refuses_a_non_loopback_address_without_tokens(
    host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SESSIONLEDGER_READ_TOKENS", raising=False)
    monkeypatch.delenv("SESSIONLEDGER_ADMIN_TOKENS", raising=False)
    with Ledger.open(sqlite_database(tmp_path)) as ledger:
        with pytest.raises(UnsafeBind, match="refusing to bind"):
            serve(ledger, host=host, port=free_port(), settings=ServerSettings())
        with pytest.raises(UnsafeBind):
            serve(ledger, host=host, port=free_port())  # nothing in the environment either


def test_integers_beyond_64_bits_in_content_arrive_exactly(admin: httpx.Client) -> None:
    # httpx writes them exactly; a parser that reads them as floats would change them.
    key = new_key()
    sid = open_key(admin, key)
    contents = [2**70, -(2**63) - 1, {"tokens": [2**64, -(2**65)]}]
    record(admin, *(entry(key, sid, f"m{n}", content=c) for n, c in enumerate(contents)))
    transcript = ok(admin.get(path(key, "/transcript")))
    assert [e["content"] for e in transcript["entries"]] == contents
