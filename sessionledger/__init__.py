"""sessionledger: the event-sourced session store behind AI-agent chat gateways.

from sessionledger import Ledger
ledger = Ledger.open()            # embedded SQLite, created on first use
row = ledger.resolve("agent:main:telegram:direct:4242").session
"""

from sessionledger.domain.errors import (
    InvalidEvent,
    LedgerError,
    SchemaMismatch,
    SessionChanged,
    SessionDeleted,
    StoreUnavailable,
    UnknownSession,
)
from sessionledger.domain.policies import FreshnessPolicy
from sessionledger.infrastructure.ledger import Ledger, RecordResult, ResetResult, ResolveResult
from sessionledger.projections.queries import Page
from sessionledger.projections.rows import EntryRow, GenerationRow, RunRow, SessionView

__all__ = [
    "EntryRow",
    "FreshnessPolicy",
    "GenerationRow",
    "InvalidEvent",
    "Ledger",
    "LedgerError",
    "Page",
    "RecordResult",
    "ResetResult",
    "ResolveResult",
    "RunRow",
    "SchemaMismatch",
    "SessionChanged",
    "SessionDeleted",
    "SessionView",
    "StoreUnavailable",
    "UnknownSession",
]
