"""The app's pure-ASGI middleware: the body limit, keys with encoded slashes routed as one
path segment, and request metrics. Plain ASGI: Starlette's `BaseHTTPMiddleware` (and
`@app.middleware("http")`) runs every request through a task group and memory streams,
which cost as much as the rest of the HTTP layer under load."""

from __future__ import annotations

import time
from urllib.parse import quote, unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionledger.infrastructure.http.errors import too_large
from sessionledger.infrastructure.http.metrics import Metrics
from sessionledger.infrastructure.http.models import MAX_BODY_BYTES


class BodyLimit:
    """Refuses request bodies over the limit with 413, before anything parses them."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_large(self.limit)(scope, receive, send)
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
                        await too_large(self.limit)(scope, receive, send)
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
SLASH = "\x1f"
INVALID = "\x7f"


class SegmentConvertor(Convertor[str]):
    """One path segment, its encoded slashes restored: `a%2Fb` -> 'a/b'."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return value.replace(SLASH, "/")

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("segment", SegmentConvertor())


class EncodedSlashes:
    """Routes on the path as sent, so `/v1/sessions/x%2Faudit` is the row of key 'x/audit'.

    The server decodes %2F before routing; `/v1/sessions/x/audit` would then be the audit
    of key 'x', and `DELETE /v1/sessions/a%2Fbindings%2Fp` would drop a binding of key 'a'
    instead of deleting key 'a/bindings/p'. Each segment is decoded on its own here, an
    encoded '/' kept as `SLASH` until the `segment` convertor puts it back.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path.startswith(("/v1/sessions/", "/v1/runs/")):
            raw = scope.get("raw_path") if scope["type"] == "http" else None
            # A literal SLASH (sent as %1F) must not turn into '/': make it DEL, which key
            # and id validation refuse like any control character.
            routed = path.replace(SLASH, INVALID)
            if raw:
                sent = raw.split(b"?", 1)[0].decode("latin-1")
                segments = [unquote(segment) for segment in sent.split("/")]
                if "/".join(segments) == path:  # what the server decoded (no root_path)
                    routed = "/".join(
                        s.replace(SLASH, INVALID).replace("/", SLASH) for s in segments
                    )
            scope = {**scope, "path": routed}
        await self.app(scope, receive, send)


class RequestMetrics:
    """Counts requests by method, route and status; `Server-Timing` tells how long the app
    took to start its answer."""

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
                self.metrics.answer(scope["method"], path, message["status"])
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
                headers = [*message.get("headers", ()), (b"server-timing", took.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)
