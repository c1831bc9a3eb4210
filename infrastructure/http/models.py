"""The HTTP API's request and response bodies (camelCase JSON, as every `Model`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sessionledger.domain.events import IncomingFact
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.domain.values import (
    MAX_BATCH_EVENTS,
    Identifier,
    Instant,
    Interaction,
    Model,
    ResetReason,
)
from sessionledger.infrastructure.ledger import RecordResult
from sessionledger.projections.rows import EntryView, SessionView

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_WINDOW_MINUTES = 60 * 24 * 366  # time windows in query strings: at most a year


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
    """Every error's body: a stable code, one line for people, and what to recover with."""

    error: str
    message: str
    details: Any = None


# The error answers every route documents in the OpenAPI schema.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}
