"""Documented errors of the ledger. Each names what the caller must know to recover."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""

    code = "ledger-error"


class InvalidEvent(LedgerError):
    """Input failed validation; `field` names the offending field. Nothing was recorded."""

    code = "invalid-input"

    def __init__(self, field: str, message: str, details: list[dict[str, object]] | None = None):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.details = details or [{"field": field, "message": message}]


class LimitExceeded(InvalidEvent):
    """Input over a documented limit (batch size, entry size, body size)."""

    code = "too-large"


class UnknownSession(LedgerError):
    code = "unknown-session"

    def __init__(self, session_key: str):
        super().__init__(f"unknown session {session_key!r}")
        self.session_key = session_key


class SessionDeleted(LedgerError):
    """The key was deleted; its generations are archived and it cannot be written to."""

    code = "session-deleted"

    def __init__(self, session_key: str, session_id: str | None):
        super().__init__(f"session {session_key!r} was deleted (last sessionId {session_id!r})")
        self.session_key = session_key
        self.session_id = session_id


class SessionChanged(LedgerError):
    """Compare-and-swap failed: the key's current generation is not the one expected."""

    code = "session-changed"

    def __init__(self, session_key: str, expected_session_id: str, current_session_id: str | None):
        super().__init__(
            f"session {session_key!r} is at sessionId {current_session_id!r}, "
            f"not the expected {expected_session_id!r}"
        )
        self.session_key = session_key
        self.expected_session_id = expected_session_id
        self.current_session_id = current_session_id


class StoreUnavailable(LedgerError):
    """The database is locked, full or gone. Retry with the same eventIds: nothing half-written."""

    code = "store-unavailable"


class SchemaMismatch(LedgerError):
    """The database schema is not one this code knows (newer, unknown, or not yet upgraded)."""

    code = "schema-mismatch"
