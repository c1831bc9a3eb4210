"""Transcript entries lose `session_key` and `prev_hash`, which their neighbours hold.

An entry's key is its generation's (`ledger_generations.session_key`), and its
`prev_hash` is the previous entry's `entry_hash` (or "" for a generation's first): the
transcript read puts both back (`projections.rows.EntryView`). Stored, they were ~100
of an entry row's ~550 bytes, written by every transcript append: in 1,000-event
batches over 50 keys, about 5% of ingest's time per event. The hash chain itself is
unchanged: the events still carry both hashes, and `verify` checks them there.

SQLite (3.35 and later) and PostgreSQL drop a column in place. Downgrading adds the
columns back and fills them from the same neighbours.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SUFFIXES = ("", "_shadow")


def upgrade() -> None:
    for s in SUFFIXES:
        op.drop_column(f"ledger_entries{s}", "session_key")
        op.drop_column(f"ledger_entries{s}", "prev_hash")


def downgrade() -> None:
    for s in SUFFIXES:
        entries, generations = f"ledger_entries{s}", f"ledger_generations{s}"
        op.add_column(entries, sa.Column("session_key", sa.String(512)))
        op.add_column(entries, sa.Column("prev_hash", sa.String(64)))
        op.execute(
            f"UPDATE {entries} SET session_key = (SELECT g.session_key FROM {generations} g "
            f"WHERE g.session_id = {entries}.session_id), prev_hash = COALESCE(("
            f"SELECT p.entry_hash FROM {entries} p WHERE p.session_id = {entries}.session_id "
            f"AND p.seq = {entries}.seq - 1), '')"
        )
        with op.batch_alter_table(entries) as batch:
            batch.alter_column("session_key", existing_type=sa.String(512), nullable=False)
            batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
