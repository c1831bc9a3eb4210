"""Transcript entries lose their unique `(session_id, entry_id)` index.

Nothing reads entries by id: the transcript reads a generation's entries by
`(session_id, seq)`, its primary key. The index only guarded what the aggregate
decides (an entry id is used once a generation: a retry is `duplicate`, other content
under the same id `rejected`) and the property tests hold the fold to. Its price was
paid by every transcript append: in 1,000-event batches over 50 keys, 147 of each
commit's 835 WAL pages (each key's leaf pages split and rewritten batch after batch)
and ~2% of ingest's instructions.

SQLite drops a table's constraint only by rebuilding the table: batch mode copies the
entries once (the embedded store does this on its first open after upgrading; 7.8 s
for 505,000 entries, and the old table's pages stay in the file, free for later writes).
PostgreSQL drops it in place. Nothing else changes, so no rebuild is needed.
Downgrading adds the constraint back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SUFFIXES = ("", "_shadow")


def upgrade() -> None:
    for s in SUFFIXES:
        with op.batch_alter_table(f"ledger_entries{s}") as batch:
            batch.drop_constraint(f"uq_ledger_entries{s}_entry", type_="unique")


def downgrade() -> None:
    for s in SUFFIXES:
        with op.batch_alter_table(f"ledger_entries{s}") as batch:
            batch.create_unique_constraint(
                f"uq_ledger_entries{s}_entry", ["session_id", "entry_id"]
            )
