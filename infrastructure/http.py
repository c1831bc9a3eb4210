"""HTTP API (SPEC §6): a thin FastAPI layer over the Ledger.

Handlers translate JSON to Ledger calls and back; every decision stays in the
domain. Errors are JSON `{"error", "message", "details"}` and never a stack trace.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import quote, unquote

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionledger.domain.errors import (
    InvalidEvent,
    LedgerError,
    LimitExceeded,
    SchemaMismatch,
    SessionChanged,
    SessionDeleted,
    StoreUnavailable,
    UnknownSession,
)
from sessionledger.domain.events import IncomingFact
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.domain.values import (
    MAX_BATCH_EVENTS,
    Identifier,
    Instant,
    Interaction,
    Model,
    ResetReason,
    ShortText,
    Status,
)
from sessionledger.infrastructure import jsoncodec
from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.ledger import Ledger, RecordResult, ResetResult, ResolveResult
from sessionledger.infrastructure.maintenance.bindings import BindingsReport
from sessionledger.infrastructure.maintenance.prune import PruneReport
from sessionledger.infrastructure.maintenance.recover import RecoverReport
from sessionledger.infrastructure.maintenance.verify import VerifyReport
from sessionledger.projections.audit import AuditReport, to_markdown
from sessionledger.projections.queries import MAX_PAGE
from sessionledger.projections.reports import StatusReport
from sessionledger.projections.rows import EntryView, GenerationRow, RunRow, SessionView

log = logging.getLogger("sessionledger.http")

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_WINDOW_MINUTES = 60 * 24 * 366  # time windows in query strings: at most a year
Scope_ = Literal["read", "admin"]


# -- request and response bodies --------------------------------------------------------


class EventsRequest(Model):
    events: list[IncomingFact] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class EventsResponse(Model):
    results: list[RecordResult]


class ResolveRequest(Model):
    at: Instant | None = None
    interaction: Interaction = "user"
    policy: FreshnessPolicy | None = None
    session_id: Identifier | None = None


class ResetRequest(Model):
    reason: ResetReason = "reset"
    expected_session_id: Identifier | None = None
    session_id: Identifier | None = None
    at: Instant | None = None


class BindingRequest(Model):
    cli_session_id: Identifier
    at: Instant | None = None


class DeleteResponse(Model):
    session_key: str
    deleted_session_id: str


class SessionsPage(Model):
    items: list[SessionView]
    next_cursor: str | None


class TranscriptResponse(Model):
    session_key: str
    session_ids: list[str]
    entries: list[EntryView]


class Health(Model):
    status: Literal["ok"]
    position: int
    log_head: int


class RecoverRequest(Model):
    stale_after_minutes: int = Field(default=30, ge=1, le=MAX_WINDOW_MINUTES)


class PruneRequest(Model):
    """Exporting transcripts writes server-side files: that is the CLI's `prune --export`."""

    older_than_minutes: int = Field(default=30 * 24 * 60, ge=1, le=MAX_WINDOW_MINUTES)


class BindingsCheckRequest(Model):
    dir: str = Field(min_length=1, max_length=4096)
    fix: bool = False


class ErrorResponse(Model):
    error: str
    message: str
    details: Any = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}


# -- errors -----------------------------------------------------------------------------


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(
    status: int, code: str, message: str, details: Any = None, **headers: str
) -> JSONResponse:
    body = ErrorResponse(error=code, message=message, details=details)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers or None)


def _ledger_error(error: LedgerError) -> JSONResponse:
    if isinstance(error, LimitExceeded):
        return _error(413, error.code, str(error), error.details)
    if isinstance(error, InvalidEvent):
        return _error(422, error.code, str(error), error.details)
    if isinstance(error, SessionChanged):
        details = {
            "sessionKey": error.session_key,
            "expectedSessionId": error.expected_session_id,
            "currentSessionId": error.current_session_id,
        }
        return _error(409, error.code, str(error), details)
    if isinstance(error, SessionDeleted):
        details = {"sessionKey": error.session_key, "sessionId": error.session_id}
        return _error(404, error.code, str(error), details)
    if isinstance(error, UnknownSession):
        return _error(404, error.code, str(error), {"sessionKey": error.session_key})
    if isinstance(error, (StoreUnavailable, SchemaMismatch)):
        return _error(503, error.code, str(error), None, **{"Retry-After": "1"})
    return _error(400, error.code, str(error))


def _field(loc: tuple[Any, ...]) -> str:
    """('body', 'events', 3, 'run.ended', 'entry', 'role') -> 'events[3].entry.role'."""
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "." in part and path.endswith("]"):
            continue  # the union tag pydantic inserts after a list index
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _validation_error(error: RequestValidationError) -> JSONResponse:
    problems = list(error.errors())
    if any(p.get("type") == "json_invalid" for p in problems):
        return _error(400, "malformed-json", "request body is not valid JSON")
    details = []
    for problem in problems:
        loc = tuple(problem.get("loc", ()))
        if problem.get("type") in {"union_tag_not_found", "union_tag_invalid"}:
            loc = (*loc, "type")
        details.append({"field": _field(loc), "message": problem.get("msg", "invalid")})
    too_large = any(
        p.get("type") == "too_large"
        or (p.get("type") == "too_long" and tuple(p.get("loc", ())) == ("body", "events"))
        for p in problems
    )
    first = details[0] if details else {"field": "body", "message": "invalid"}
    message = f"{first['field']}: {first['message']}"
    if too_large:
        return _error(413, LimitExceeded.code, message, details)
    return _error(422, InvalidEvent.code, message, details)


# -- body size guard ----------------------------------------------------------------------


class BodyLimit:
    """Refuses request bodies over the limit with 413, before anything parses them."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _error(413, "too-large", f"body is larger than {self.limit} bytes")(
                scope, receive, send
            )
            return
        # A body without Content-Length (chunked) is counted as it arrives. Over the limit,
        # answer 413 here and tell the app the client went away: FastAPI's body parser turns
        # an exception raised from `receive` into a 400.
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    if not started:
                        await _error(413, "too-large", f"body is larger than {self.limit} bytes")(
                            scope, receive, send
                        )
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 already went out; drop the app's answer to the "disconnect"
            started = True
            await send(message)

        await self.app(scope, counted, guarded)


# -- path segments: keys travel URL-encoded, '/' as %2F ------------------------------------

# Stands for an encoded '/' inside one path segment while routing. A control character, so
# never part of a valid key or id (those refuse control characters).
_SLASH = "\x1f"
_INVALID = "\x7f"


class SegmentConvertor(Convertor[str]):
    """One path segment, its encoded slashes restored: `a%2Fb` -> 'a/b'."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return value.replace(_SLASH, "/")

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("segment", SegmentConvertor())


class EncodedSlashes:
    """Routes on the path as sent, so `/v1/sessions/x%2Faudit` is the row of key 'x/audit'.

    The server decodes %2F before routing; `/v1/sessions/x/audit` would then be the audit
    of key 'x', and `DELETE /v1/sessions/a%2Fbindings%2Fp` would drop a binding of key 'a'
    instead of deleting key 'a/bindings/p'. Each segment is decoded on its own here, an
    encoded '/' kept as `_SLASH` until the `segment` convertor puts it back.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        path = scope.get("path", "")
        if path.startswith(("/v1/sessions/", "/v1/runs/")):
            # A literal _SLASH (sent as %1F) must not turn into '/': make it DEL, which key
            # and id validation refuse like any control character.
            routed = path.replace(_SLASH, _INVALID)
            if raw:
                sent = raw.split(b"?", 1)[0].decode("latin-1")
                segments = [unquote(segment) for segment in sent.split("/")]
                if "/".join(segments) == path:  # what the server decoded (no root_path)
                    routed = "/".join(
                        s.replace(_SLASH, _INVALID).replace("/", _SLASH) for s in segments
                    )
            scope = {**scope, "path": routed}
        await self.app(scope, receive, send)


# -- request metrics ----------------------------------------------------------------------


class RequestMetrics:
    """Counts requests by method, route and status; `Server-Timing` tells how long the app
    took to start its answer. Plain ASGI: Starlette's `@app.middleware("http")` runs every
    request through a task group and memory streams, which cost as much as the rest of
    the HTTP layer under load."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The router put the matched route into this scope (Router updates it).
                path = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.requests.labels(scope["method"], path, str(message["status"])).inc()
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
                headers = [*message.get("headers", ()), (b"server-timing", took.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)


# -- POST /v1/events ahead of FastAPI ------------------------------------------------------

_RESULTS: TypeAdapter[list[RecordResult]] = TypeAdapter(list[RecordResult])
_EVENTS_ROUTE = "/v1/events"


A = TypeVar("A")
R = TypeVar("R")
_Job = tuple[Callable[[A], R], A, asyncio.AbstractEventLoop, "asyncio.Future[R]"]


class Workers(Generic[A, R]):
    """Threads for a blocking call, each answer handed straight to the event loop.

    `loop.run_in_executor` wraps every call in a concurrent Future chained to an asyncio
    one (locks, callbacks, a state copy each way) and anyio's `to_thread` adds a capacity
    limiter and cancel scopes; here a thread takes (function, argument, future) off a
    queue and sets the future with `call_soon_threadsafe`. A thread starts when a call
    finds none idle, up to `size`: group commit groups only the calls that wait in
    threads of their own. Threads are daemons; `close` lets each finish its call.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.jobs: queue.SimpleQueue[_Job[A, R] | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.idle = 0  # threads done with a call and not yet claimed by the next
        self.lock = threading.Lock()

    def run(self, function: Callable[[A], R], argument: A) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        with self.lock:
            if self.idle:
                self.idle -= 1
            elif len(self.threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self.threads)}", daemon=True
                )
                self.threads.append(thread)
                thread.start()
        self.jobs.put((function, argument, loop, future))
        return future

    def close(self) -> None:
        """Stop the threads once their calls are done; a later call starts new ones."""
        with self.lock:
            threads, self.threads = self.threads, []
        for _ in threads:
            self.jobs.put(None)
        for thread in threads:
            thread.join()
        with self.lock:
            self.idle = 0

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            function, argument, loop, future = job
            try:
                result = function(argument)
            except BaseException as error:  # as the executor's threads pass every error on
                _answer(loop, future.set_exception, future, error)
            else:
                _answer(loop, future.set_result, future, result)
            with self.lock:
                self.idle += 1


def _answer(
    loop: asyncio.AbstractEventLoop,
    setter: Callable[[Any], None],
    future: asyncio.Future[Any],
    value: Any,
) -> None:
    with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, setter, future, value)


def _settle(setter: Callable[[Any], None], future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # cancelled meanwhile
        setter(value)


class EventsPath:
    """POST /v1/events, the hot path, answered before FastAPI's middleware stack.

    FastAPI's stack (its error, telemetry and body-limit layers, then ours) cost about
    as much per request as the rest of the HTTP side together. Here: the auth check, the
    body gathered within the body limit, parsed (`jsoncodec.loads`) and validated as
    `EventsRequest` (as the route validates it), one hop to a worker thread for the
    write, the answer serialised as the route's `EventsResponse`, ledger errors answered
    by the route's handler, and the request counted and timed as `RequestMetrics` does.

    Whatever is not the plain case goes to the FastAPI app, the body replayed, and is
    answered exactly as before: a content type other than `application/json`, an
    Authorization header that does not allow it (the route's 401/403), a declared or
    counted body over the limit (`BodyLimit`'s 413), a body that does not parse or that
    does not validate (the route's 400/413/422 with their details), a body that never
    arrived, and every request while FastAPI's own telemetry is configured.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        ledger: Ledger,
        metrics: Metrics,
        settings: ServerSettings,
        telemetry: Callable[[], bool],
        limit: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.ledger = ledger
        self.metrics = metrics
        self.settings = settings
        self.telemetry = telemetry
        self.limit = limit
        self.answered: dict[int, Any] = {}  # request counters by status, made on first use
        # As many threads as anyio's default limiter allowed the route's write.
        self.workers: Workers[list[IncomingFact], list[RecordResult]] = Workers(40, "events")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = authorization = None
        too_large = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                if content_type is None:  # the first value, as Request.headers reads it
                    content_type = value
            elif name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"content-length":
                too_large = too_large or (value.isdigit() and int(value) > self.limit)
        if (
            content_type != b"application/json"
            or too_large
            or (
                self.settings.auth_enabled
                and _refusal(self.settings, "read", (authorization or b"").decode("latin-1"))
                is not None
            )
            or self.telemetry()
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        received = [await receive()]
        message = received[0]
        plain = message["type"] == "http.request"
        if plain and message.get("more_body", False):
            seen = len(message.get("body", b""))
            while plain and message.get("more_body", False) and seen <= self.limit:
                message = await receive()
                received.append(message)
                plain = message["type"] == "http.request"
                seen += len(message.get("body", b""))
            plain = plain and seen <= self.limit
        try:
            if not plain:
                raise ValueError("the body did not arrive, or is over the limit")
            body = b"".join(m.get("body", b"") for m in received)
            # jsoncodec: orjson reads integers beyond 64 bits as floats; the route's parser
            # (the stdlib's) reads them exactly, and so does this.
            request = EventsRequest.model_validate(jsoncodec.loads(body))
        except (ValueError, ValidationError):  # both parsers' errors are ValueErrors

            async def replay() -> Message:
                return received.pop(0) if received else await receive()

            await self.app(scope, replay, send)
            return
        try:
            results = await self.workers.run(self.ledger.record, request.events)
        except LedgerError as error:
            response = _ledger_error(error)
            status, headers, content = response.status_code, response.raw_headers, response.body
        except Exception:
            # Answered as FastAPI's error middleware answers: logged, a 500 that is not
            # counted, and raised on to the server.
            log.exception("unhandled error on POST %s", _EVENTS_ROUTE)
            await _error(500, "internal-error", "internal error; see the server log")(
                scope, receive, send
            )
            raise
        else:
            self.metrics.count(results)
            content = b'{"results":' + _RESULTS.dump_json(results, by_alias=True) + b"}"
            status = 200
            headers = [
                (b"content-length", str(len(content)).encode()),
                (b"content-type", b"application/json"),
            ]
        counter = self.answered.get(status)
        if counter is None:
            counter = self.metrics.requests.labels("POST", _EVENTS_ROUTE, str(status))
            self.answered[status] = counter
        counter.inc()
        took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
        headers = [*headers, (b"server-timing", took)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class LedgerAPI(FastAPI):
    """The FastAPI app, with `POST /v1/events` served by `EventsPath` ahead of its stack."""

    events: EventsPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.events is not None
            and scope["type"] == "http"
            and scope["path"] == _EVENTS_ROUTE
            and scope["method"] == "POST"
        ):
            await self.events(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app as FastAPI serves it: where `EventsPath` hands what it declines."""
        await super().__call__(scope, receive, send)


# -- the app ------------------------------------------------------------------------------


class Metrics:
    def __init__(self, ledger: Ledger) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sessionledger_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "sessionledger_events",
            "Events submitted, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.fenced = Counter(
            "sessionledger_fenced_late_events",
            "Events recorded against a rotated or deleted generation",
            registry=self.registry,
        )
        self.lag = Gauge(
            "sessionledger_projection_lag_events",
            "Log entries not yet folded into the read models",
            registry=self.registry,
        )
        self.ledger = ledger

    def count(self, results: list[RecordResult]) -> None:
        for result in results:
            self.events.labels(result.outcome).inc()
            if result.outcome == "archived" and result.reason in ("rotated", "deleted"):
                self.fenced.inc()

    def render(self) -> bytes:
        self.lag.set(self.ledger.projection_lag())
        return generate_latest(self.registry)


def create_app(ledger: Ledger, settings: ServerSettings | None = None) -> LedgerAPI:
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if isinstance(app, LedgerAPI) and app.events is not None:
            app.events.workers.close()

    app = LedgerAPI(
        lifespan=lifespan,
        title="sessionledger",
        version="0.1.0",
        summary="Event-sourced session store for AI-agent chat gateways",
        responses=ERRORS,
    )
    metrics = Metrics(ledger)
    app.state.ledger = ledger
    app.state.metrics = metrics

    def authorize(scope: Scope_) -> Callable[[Request], Awaitable[None]]:
        # async: FastAPI runs a sync dependency in its thread pool, a thread hop per request.
        async def check(request: Request) -> None:
            refused = _refusal(settings, scope, request.headers.get("authorization", ""))
            if refused is not None:
                raise refused

        return check

    read = [Depends(authorize("read"))]
    admin = [Depends(authorize("admin"))]

    @app.exception_handler(LedgerError)
    async def on_ledger_error(_: Request, error: LedgerError) -> JSONResponse:
        return _ledger_error(error)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(error)

    @app.exception_handler(AuthError)
    async def on_auth_error(_: Request, error: AuthError) -> JSONResponse:
        code = "unauthorized" if error.status == 401 else "forbidden"
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
        return _error(error.status, code, str(error), None, **headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(
            error.status_code, "http-error"
        )
        return _error(error.status_code, code, str(error.detail))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal-error", "internal error; see the server log")

    @app.post("/v1/events", dependencies=read, response_model=EventsResponse, tags=["events"])
    async def record_events(body: EventsRequest) -> EventsResponse:
        """Record 1-1000 events; one result per event, in request order."""
        # The hot path: one thread hop for the blocking write, where a sync endpoint takes
        # two (FastAPI validates a sync endpoint's response in its thread pool as well).
        results = await run_in_threadpool(ledger.record, body.events)
        metrics.count(results)
        return EventsResponse(results=results)

    @app.post(
        "/v1/sessions/{session_key:segment}/resolve",
        dependencies=read,
        response_model=ResolveResult,
        tags=["sessions"],
    )
    def resolve(session_key: str, body: ResolveRequest | None = None) -> ResolveResult:
        """On every inbound message: open the key if new, rotate it if its policy expired."""
        body = body or ResolveRequest()
        return ledger.resolve(
            session_key,
            at=body.at,
            interaction=body.interaction,
            policy=body.policy or settings.policies.for_key(session_key),
            session_id=body.session_id,
        )

    @app.post(
        "/v1/sessions/{session_key:segment}/reset",
        dependencies=admin,
        response_model=ResetResult,
        tags=["sessions"],
    )
    def reset(session_key: str, body: ResetRequest | None = None) -> ResetResult:
        """Rotate the key to a new generation; 409 session-changed on a CAS mismatch."""
        body = body or ResetRequest()
        return ledger.reset(
            session_key,
            reason=body.reason,
            expected_session_id=body.expected_session_id,
            session_id=body.session_id,
            at=body.at,
        )

    @app.put(
        "/v1/sessions/{session_key:segment}/bindings/{provider:segment}",
        dependencies=admin,
        response_model=RecordResult,
        tags=["bindings"],
    )
    def set_binding(session_key: str, provider: Identifier, body: BindingRequest) -> RecordResult:
        return ledger.set_binding(session_key, provider, body.cli_session_id, at=body.at)

    @app.delete(
        "/v1/sessions/{session_key:segment}/bindings/{provider:segment}",
        dependencies=admin,
        response_model=RecordResult,
        tags=["bindings"],
    )
    def drop_binding(
        session_key: str, provider: Identifier, reason: Annotated[ShortText, Query()] = "dropped"
    ) -> RecordResult:
        return ledger.drop_binding(session_key, provider, reason=reason)

    @app.get(
        "/v1/sessions/{session_key:segment}/transcript",
        dependencies=read,
        response_model=TranscriptResponse,
        tags=["sessions"],
    )
    def transcript(
        session_key: str,
        session_id: Annotated[str | None, Query(alias="sessionId")] = None,
        lineage: bool = False,
    ) -> TranscriptResponse:
        entries = ledger.transcript(session_key, session_id=session_id, lineage=lineage)
        ids = list(dict.fromkeys(e.session_id for e in entries))
        return TranscriptResponse(session_key=session_key, session_ids=ids, entries=entries)

    @app.get(
        "/v1/sessions/{session_key:segment}/audit",
        dependencies=read,
        response_model=AuditReport,
        responses={
            200: {
                "description": "The audit as JSON, or with format=markdown an incident "
                "report (text/markdown)",
                "content": {"text/markdown": {"schema": {"type": "string"}}},
            }
        },
        tags=["audit"],
    )
    def audit(
        session_key: str,
        run_id: Annotated[Identifier | None, Query(alias="runId")] = None,
        as_of: Annotated[Instant | None, Query(alias="asOf")] = None,
        position: Annotated[int | None, Query(ge=0)] = None,
        output: Annotated[Literal["json", "markdown"], Query(alias="format")] = "json",
    ) -> Any:
        report = ledger.audit(session_key, run_id=run_id, as_of=as_of, position=position)
        if output == "markdown":
            return PlainTextResponse(to_markdown(report), media_type="text/markdown")
        return report

    @app.get(
        "/v1/sessions/{session_key:segment}/generations",
        dependencies=read,
        response_model=list[GenerationRow],
        tags=["sessions"],
    )
    def generations(session_key: str) -> list[GenerationRow]:
        found = ledger.generations(session_key)
        if not found:
            raise UnknownSession(session_key)
        return found

    @app.get(
        "/v1/sessions/{session_key:segment}",
        dependencies=read,
        response_model=SessionView,
        tags=["sessions"],
    )
    def session(session_key: str) -> SessionView:
        return ledger.session(session_key)

    @app.delete(
        "/v1/sessions/{session_key:segment}",
        dependencies=admin,
        response_model=DeleteResponse,
        tags=["sessions"],
    )
    def delete(
        session_key: str,
        expected_session_id: Annotated[Identifier | None, Query(alias="expectedSessionId")] = None,
    ) -> DeleteResponse:
        deleted = ledger.delete(session_key, expected_session_id=expected_session_id)
        return DeleteResponse(session_key=session_key, deleted_session_id=deleted)

    @app.get("/v1/sessions", dependencies=read, response_model=SessionsPage, tags=["sessions"])
    def sessions(
        status: Status | None = None,
        agent: str | None = None,
        channel: str | None = None,
        active_within_minutes: Annotated[
            int | None, Query(alias="activeWithinMinutes", ge=1, le=MAX_WINDOW_MINUTES)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: str | None = None,
    ) -> SessionsPage:
        page = ledger.sessions(
            status=status,
            agent=agent,
            channel=channel,
            active_within_minutes=active_within_minutes,
            limit=limit,
            cursor=cursor,
        )
        return SessionsPage(items=page.items, next_cursor=page.next_cursor)

    @app.get("/v1/runs/{run_id:segment}", dependencies=read, response_model=RunRow, tags=["runs"])
    def run(run_id: str) -> RunRow:
        found = ledger.run(run_id)
        if found is None:
            raise StarletteHTTPException(404, f"unknown run {run_id!r}")
        return found

    @app.get("/v1/reports/status", dependencies=read, response_model=StatusReport, tags=["reports"])
    def status_report(
        stuck_after_minutes: Annotated[
            int, Query(alias="stuckAfterMinutes", ge=1, le=MAX_WINDOW_MINUTES)
        ] = 15,
        window_minutes: Annotated[
            int, Query(alias="windowMinutes", ge=1, le=MAX_WINDOW_MINUTES)
        ] = 60,
    ) -> StatusReport:
        return ledger.status_report(
            stuck_after_minutes=stuck_after_minutes, window_minutes=window_minutes
        )

    # -- maintenance (admin): every repair is an event in the log ---------------------

    @app.get("/v1/admin/verify", dependencies=admin, response_model=VerifyReport, tags=["admin"])
    def verify() -> VerifyReport:
        """Hash chains and read models against a fresh fold of the log; `ok` says if clean."""
        return ledger.verify()

    @app.post("/v1/admin/recover", dependencies=admin, response_model=RecoverReport, tags=["admin"])
    def recover(body: RecoverRequest | None = None) -> RecoverReport:
        minutes = (body or RecoverRequest()).stale_after_minutes
        return ledger.recover(timedelta(minutes=minutes))

    @app.post("/v1/admin/prune", dependencies=admin, response_model=PruneReport, tags=["admin"])
    def prune(body: PruneRequest | None = None) -> PruneReport:
        minutes = (body or PruneRequest()).older_than_minutes
        return ledger.prune(timedelta(minutes=minutes))

    @app.post(
        "/v1/admin/bindings/check",
        dependencies=admin,
        response_model=BindingsReport,
        tags=["admin"],
    )
    def bindings_check(body: BindingsCheckRequest) -> BindingsReport:
        return ledger.check_bindings(body.dir, fix=body.fix)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        position, head = ledger.positions()
        return Health(status="ok", position=position, log_head=head)

    @app.get("/metrics", dependencies=read, response_class=PlainTextResponse, tags=["operations"])
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(EncodedSlashes)
    app.add_middleware(BodyLimit)
    app.events = EventsPath(
        app.stack,
        ledger=ledger,
        metrics=metrics,
        settings=settings,
        telemetry=app._native_telemetry.enabled,
    )
    return app


def _refusal(settings: ServerSettings, scope: Scope_, authorization: str) -> AuthError | None:
    """Why the Authorization header does not allow an operation of `scope`, if it does not."""
    if not settings.auth_enabled:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return AuthError(401, "missing bearer token")
    token = token.strip()
    if _known(token, settings.admin_tokens):
        return None
    if _known(token, settings.read_tokens):
        if scope == "read":
            return None
        return AuthError(403, "this operation needs an admin token")
    return AuthError(401, "unknown bearer token")


def _known(token: str, tokens: frozenset[str]) -> bool:
    return any(hmac.compare_digest(token, known) for known in tokens)


__all__ = ["create_app"]
