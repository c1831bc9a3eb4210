"""Agent, channel and kind columns as wide as the key they are parsed from.

A key may be 512 characters and any one of its parts nearly all of it, but
`ledger_sessions.agent/channel/kind` (0002) and `ledger_runs.agent/channel` (0005) were
VARCHAR(128): PostgreSQL refused such a key's rows with a database error. They become
VARCHAR(512), live and `_shadow` alike. PostgreSQL widens a VARCHAR without rewriting
the table or its indexes. SQLite neither enforces the length nor keeps it beyond the
declared name (the column's affinity stays TEXT), so there is nothing to change there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SUFFIXES = ("", "_shadow")
COLUMNS = {"ledger_sessions": ("agent", "channel", "kind"), "ledger_runs": ("agent", "channel")}


def _resize(length: int, previous: int) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for s in SUFFIXES:
        for table, columns in COLUMNS.items():
            for column in columns:
                op.alter_column(
                    f"{table}{s}",
                    column,
                    type_=sa.String(length),
                    existing_type=sa.String(previous),
                    existing_nullable=True,
                )


def upgrade() -> None:
    _resize(512, 128)


def downgrade() -> None:
    # Fails on PostgreSQL if a stored value is longer than 128 characters, as it should.
    _resize(128, 512)
