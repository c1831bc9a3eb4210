"""Receipts lose `session_key`, which their generation's row holds.

A receipt names its event's generation (`session_id`), and the generation's row
(`ledger_generations.session_key`) names the key: the status report's late events
take it from there. Stored, it was ~30 of a receipt's ~190 bytes, written for every
event recorded.

SQLite (3.35 and later) and PostgreSQL drop a column in place. Downgrading adds the
column back and fills it from the generations.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SUFFIXES = ("", "_shadow")


def upgrade() -> None:
    for s in SUFFIXES:
        op.drop_column(f"ledger_receipts{s}", "session_key")


def downgrade() -> None:
    for s in SUFFIXES:
        receipts, generations = f"ledger_receipts{s}", f"ledger_generations{s}"
        op.add_column(receipts, sa.Column("session_key", sa.String(512)))
        op.execute(
            f"UPDATE {receipts} SET session_key = (SELECT g.session_key FROM {generations} g "
            f"WHERE g.session_id = {receipts}.session_id)"
        )
        with op.batch_alter_table(receipts) as batch:
            batch.alter_column("session_key", existing_type=sa.String(512), nullable=False)
