"""Bearer tokens and their scopes: a read token reads and records, an admin token does all.

With no token configured, every request is allowed (the server then binds only to a
loopback address: `infrastructure/server.py`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import Depends, Request
from fastapi.params import Depends as Dependency

from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.http.errors import AuthError

Scope = Literal["read", "admin"]


def refusal(settings: ServerSettings, scope: Scope, authorization: str) -> AuthError | None:
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


def requires(settings: ServerSettings, scope: Scope) -> list[Dependency]:
    """A route's dependencies: the request's token must allow `scope` (else AuthError)."""
    return [Depends(_checker(settings, scope))]


def _checker(settings: ServerSettings, scope: Scope) -> Callable[[Request], Awaitable[None]]:
    # async: FastAPI runs a sync dependency in its thread pool, a thread hop per request.
    async def check(request: Request) -> None:
        refused = refusal(settings, scope, request.headers.get("authorization", ""))
        if refused is not None:
            raise refused

    return check
