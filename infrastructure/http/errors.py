"""Error answers: JSON `{"error", "message", "details"}` with a status per kind of failure,
never a stack trace. The exception handlers map every error to one."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
from sessionledger.infrastructure.http.models import ErrorResponse
from sessionledger.infrastructure.validation import invalid_input

log = logging.getLogger("sessionledger.http")

# The part of the request FastAPI names first in a validation error's location.
_REQUEST_PARTS = frozenset({"body", "query", "path", "header"})
_HTTP_CODES = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}


class AuthError(Exception):
    """The request's credentials do not allow the operation: 401 or 403."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(
    status: int, code: str, message: str, details: Any = None, **headers: str
) -> JSONResponse:
    body = ErrorResponse(error=code, message=message, details=details)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers or None)


def too_large(limit: int) -> JSONResponse:
    """The answer to a request body over `limit` bytes."""
    return error_response(413, LimitExceeded.code, f"body is larger than {limit} bytes")


def ledger_error(error: LedgerError) -> JSONResponse:
    """A documented ledger error as its status: 413, 422, 409, 404, 503 or else 400."""
    if isinstance(error, LimitExceeded):
        return error_response(413, error.code, str(error), error.details)
    if isinstance(error, InvalidEvent):
        return error_response(422, error.code, str(error), error.details)
    if isinstance(error, SessionChanged):
        details = {
            "sessionKey": error.session_key,
            "expectedSessionId": error.expected_session_id,
            "currentSessionId": error.current_session_id,
        }
        return error_response(409, error.code, str(error), details)
    if isinstance(error, SessionDeleted):
        details = {"sessionKey": error.session_key, "sessionId": error.session_id}
        return error_response(404, error.code, str(error), details)
    if isinstance(error, UnknownSession):
        return error_response(404, error.code, str(error), {"sessionKey": error.session_key})
    if isinstance(error, (StoreUnavailable, SchemaMismatch)):
        return error_response(503, error.code, str(error), None, **{"Retry-After": "1"})
    return error_response(400, error.code, str(error))


def validation_error(error: RequestValidationError) -> JSONResponse:
    """A request FastAPI could not parse (400 malformed-json) or validate: the ledger's
    own answer to invalid input, each problem named by its field path."""
    problems = list(error.errors())
    if any(p["type"] == "json_invalid" for p in problems):
        return error_response(400, "malformed-json", "request body is not valid JSON")
    located = [
        {**p, "loc": p["loc"][1:]} if p["loc"] and p["loc"][0] in _REQUEST_PARTS else p
        for p in problems
    ]
    return ledger_error(invalid_input(located))


def add_error_handlers(app: FastAPI) -> None:
    """Answer every failure of a route with an error body (and log what is a bug)."""

    @app.exception_handler(LedgerError)
    async def on_ledger_error(_: Request, error: LedgerError) -> JSONResponse:
        return ledger_error(error)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return validation_error(error)

    @app.exception_handler(AuthError)
    async def on_auth_error(_: Request, error: AuthError) -> JSONResponse:
        code = "unauthorized" if error.status == 401 else "forbidden"
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
        return error_response(error.status, code, str(error), None, **headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http-error")
        return error_response(error.status_code, code, str(error.detail))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal-error", "internal error; see the server log")
