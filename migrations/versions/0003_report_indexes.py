"""Status report: receipts carry recordedAt; indexes for the report's windowed aggregates.

- `ledger_receipts.recorded_at`: when each event was recorded, so "late events fenced
  in the last hour" is an indexed count of `archived` receipts instead of a log replay.
  Existing receipts are backfilled from their event (receipt.position = event id; the
  stored state is JSON holding the event's `timestamp`, its recordedAt).
- `ix_ledger_receipts_outcome_recorded_at`: late events in a window.
- `ix_ledger_runs_updated_at`: runs that ended in a window (a finished run's
  `updated_at` is when its terminal event was recorded; a run ends once).
- `ix_ledger_generations_resumable_state`: generations that are not resumable.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    op.add_column(
        "ledger_receipts", sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True)
    )
    _backfill_recorded_at()
    with op.batch_alter_table("ledger_receipts") as batch:
        batch.alter_column("recorded_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index(
        "ix_ledger_receipts_outcome_recorded_at", "ledger_receipts", ["outcome", "recorded_at"]
    )
    op.create_index("ix_ledger_runs_updated_at", "ledger_runs", ["updated_at"])
    op.create_index(
        "ix_ledger_generations_resumable_state", "ledger_generations", ["resumable", "state"]
    )


def _backfill_recorded_at() -> None:
    connection = op.get_bind()
    sqlite = connection.dialect.name == "sqlite"
    receipts = sa.table(
        "ledger_receipts",
        sa.column("event_id", sa.String()),
        sa.column("position", sa.BigInteger()),
        sa.column("recorded_at", sa.DateTime(timezone=True)),
    )
    events = sa.table("sessionledger_events", sa.column("id", sa.BigInteger()), sa.column("state"))
    after = ""
    while True:
        rows = connection.execute(
            sa.select(receipts.c.event_id, events.c.state)
            .join(events, events.c.id == receipts.c.position)
            .where(receipts.c.event_id > after, receipts.c.recorded_at.is_(None))
            .order_by(receipts.c.event_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        for event_id, state in rows:
            moment = datetime.fromisoformat(json.loads(bytes(state))["timestamp"]).astimezone(UTC)
            connection.execute(
                receipts.update()
                .where(receipts.c.event_id == event_id)
                .values(recorded_at=moment.replace(tzinfo=None) if sqlite else moment)
            )
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_ledger_generations_resumable_state", table_name="ledger_generations")
    op.drop_index("ix_ledger_runs_updated_at", table_name="ledger_runs")
    op.drop_index("ix_ledger_receipts_outcome_recorded_at", table_name="ledger_receipts")
    with op.batch_alter_table("ledger_receipts") as batch:
        batch.drop_column("recorded_at")
