"""Read models: session pointers, generations, runs, transcript entries, receipts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEY = sa.String(512)
ID = sa.String(128)
SHORT = sa.String(32)


def when(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def tokens() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column(name, sa.BigInteger(), nullable=False)
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    ]


def upgrade() -> None:
    op.create_table(
        "ledger_sessions",
        sa.Column("session_key", KEY, primary_key=True),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("agent", sa.String(128)),
        sa.Column("channel", sa.String(128)),
        sa.Column("kind", sa.String(128)),
        when("created_at", nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_sessions_agent", "ledger_sessions", ["agent"])
    op.create_index("ix_ledger_sessions_channel", "ledger_sessions", ["channel"])

    op.create_table(
        "ledger_generations",
        sa.Column("session_id", ID, primary_key=True),
        sa.Column("session_key", KEY, nullable=False),
        sa.Column("previous_session_id", ID),
        sa.Column("next_session_id", ID),
        sa.Column("open_reason", SHORT, nullable=False),
        sa.Column("state", SHORT, nullable=False),
        when("opened_at", nullable=False),
        sa.Column("opened_position", sa.BigInteger(), nullable=False),
        when("archived_at"),
        sa.Column("archive_reason", SHORT),
        sa.Column("status", SHORT, nullable=False),
        sa.Column("active_run_ids", sa.JSON(), nullable=False),
        sa.Column("last_run_id", ID),
        sa.Column("last_error", sa.Text()),
        when("started_at"),
        when("ended_at"),
        sa.Column("runtime_ms", sa.BigInteger()),
        *tokens(),
        sa.Column("model", sa.Text()),
        sa.Column("provider", sa.Text()),
        when("last_interaction_at"),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("resumable", sa.Boolean(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("bindings", sa.JSON(), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("late_events", sa.Integer(), nullable=False),
        when("updated_at", nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_generations_session_key", "ledger_generations", ["session_key"])
    op.create_index("ix_ledger_generations_status", "ledger_generations", ["status"])
    op.create_index("ix_ledger_generations_updated_at", "ledger_generations", ["updated_at"])

    op.create_table(
        "ledger_runs",
        sa.Column("run_id", ID, primary_key=True),
        sa.Column("session_key", KEY, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("status", SHORT, nullable=False),
        sa.Column("trigger", SHORT, nullable=False),
        sa.Column("writer", SHORT, nullable=False),
        sa.Column("model", sa.Text()),
        sa.Column("provider", sa.Text()),
        when("started_at", nullable=False),
        when("ended_at"),
        sa.Column("runtime_ms", sa.BigInteger()),
        sa.Column("stop_reason", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("error_kind", sa.Text()),
        *tokens(),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("started_position", sa.BigInteger(), nullable=False),
        sa.Column("ended_position", sa.BigInteger()),
        when("updated_at", nullable=False),
    )
    op.create_index("ix_ledger_runs_session_id", "ledger_runs", ["session_id"])
    op.create_index("ix_ledger_runs_status", "ledger_runs", ["status"])
    op.create_index("ix_ledger_runs_started_at", "ledger_runs", ["started_at"])

    op.create_table(
        "ledger_entries",
        sa.Column("session_id", ID, primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("entry_id", ID, nullable=False),
        sa.Column("parent_id", ID),
        sa.Column("role", SHORT, nullable=False),
        sa.Column("content", sa.JSON()),
        when("timestamp", nullable=False),
        sa.Column("writer", SHORT, nullable=False),
        sa.Column("run_id", ID),
        sa.Column("session_key", KEY, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        when("recorded_at", nullable=False),
        sa.UniqueConstraint("session_id", "entry_id", name="uq_ledger_entries_entry"),
    )

    op.create_table(
        "ledger_receipts",
        sa.Column("event_id", ID, primary_key=True),
        sa.Column("session_key", KEY, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("current_session_id", ID),
        sa.Column("outcome", SHORT, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "ledger_receipts",
        "ledger_entries",
        "ledger_runs",
        "ledger_generations",
        "ledger_sessions",
    ):
        op.drop_table(table)
