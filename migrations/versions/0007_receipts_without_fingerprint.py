"""Receipts no longer store the event's fingerprint.

A retried eventId is the same event when its fingerprint equals the logged event's: it
is now derived from the log at the receipt's position on the rare retry
(infrastructure/batch.py) instead of being kept in every receipt, where it cost a dump
and a SHA-256 per event folded (every write and every rebuild) and 64 of a receipt's
~240 bytes. `ledger_receipts.fingerprint` and its `_shadow` twin are dropped; nothing
else changes, so no rebuild is needed after upgrading.

SQLite (3.35 or newer) drops the column in place; older SQLite and PostgreSQL through
alembic. Downgrading adds the column back empty: run the older code's `sessionledger
rebuild` afterwards, which refills it from the log (until then that code would take
every retry for a different event).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("ledger_receipts", "ledger_receipts_shadow")


def upgrade() -> None:
    native = op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)
    for table in TABLES:
        if native:
            # In place: batch mode would copy every receipt into a new table.
            op.execute(f"ALTER TABLE {table} DROP COLUMN fingerprint")
        else:
            with op.batch_alter_table(table) as batch:
                batch.drop_column("fingerprint")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("fingerprint", sa.String(64), nullable=False, server_default="")
            )
