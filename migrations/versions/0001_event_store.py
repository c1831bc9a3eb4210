"""Event store: the library's events, snapshots and tracking tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy_utils.types.uuid import UUIDType

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Column types match eventsourcing_sqlalchemy.models, which reads and writes these tables.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sessionledger_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("originator_id", UUIDType(), nullable=False),
        sa.Column("originator_version", ID, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
    )
    op.create_index(
        "sessionledger_events_aggregate_idx",
        "sessionledger_events",
        ["originator_id", "originator_version"],
        unique=True,
    )
    op.create_table(
        "sessionledger_snapshots",
        sa.Column("originator_id", UUIDType(), primary_key=True),
        sa.Column("originator_version", ID, primary_key=True),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "sessionledger_tracking",
        sa.Column("application_name", sa.String(32), primary_key=True),
        sa.Column("notification_id", ID),
    )


def downgrade() -> None:
    op.drop_table("sessionledger_tracking")
    op.drop_table("sessionledger_snapshots")
    op.drop_index("sessionledger_events_aggregate_idx", table_name="sessionledger_events")
    op.drop_table("sessionledger_events")
