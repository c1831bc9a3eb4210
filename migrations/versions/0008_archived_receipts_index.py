"""Receipts are indexed by time only where the report reads them: archived events.

`ix_ledger_receipts_outcome_recorded_at` held an entry for every recorded event, but
the only query that reads receipts by time is the status report's count and list of
late events fenced in a window (`outcome = 'archived'`). Every write paid an index
insert (and, for a single event, about one WAL page) for it, and every rebuild built
it over the whole log. It becomes a partial index of the archived receipts by
`recorded_at`, live and `_shadow` alike (`projections.tables`); the report names the
outcome as a literal so the planner can use it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SUFFIXES = ("", "_shadow")
ARCHIVED = sa.text("outcome = 'archived'")


def _replace(drop: str, create: str, columns: list[str], **where: Any) -> None:
    """Drop one receipts index and create another in its place, live and `_shadow`."""
    for s in SUFFIXES:
        op.drop_index(f"ix_ledger_receipts{s}_{drop}", f"ledger_receipts{s}")
        op.create_index(f"ix_ledger_receipts{s}_{create}", f"ledger_receipts{s}", columns, **where)


def upgrade() -> None:
    _replace(
        "outcome_recorded_at",
        "archived_recorded_at",
        ["recorded_at"],
        sqlite_where=ARCHIVED,
        postgresql_where=ARCHIVED,
    )


def downgrade() -> None:
    _replace("archived_recorded_at", "outcome_recorded_at", ["outcome", "recorded_at"])
