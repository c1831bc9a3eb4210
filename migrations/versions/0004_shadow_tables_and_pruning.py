"""Shadow read models for online rebuild and bounded verify; pruned generations.

- `ledger_generations.pruned_at`: when maintenance pruned the generation (its
  transcript rows left `ledger_entries`; the log keeps the events).
- `*_shadow`: a twin of every read-model table and of the tracking table. `rebuild`
  and `verify` fold the log into them page by page, outside the writer lock, then
  swap the contents in (rebuild) or compare them row by row (verify). They have the
  shape of their live twins as of revision 0003; a later change to a read-model
  table must change its shadow twin in the same migration (the drift test checks).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "_shadow"
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
    op.add_column("ledger_generations", when("pruned_at"))

    op.create_table(
        f"ledger_sessions{S}",
        sa.Column("session_key", KEY, primary_key=True),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("agent", sa.String(128)),
        sa.Column("channel", sa.String(128)),
        sa.Column("kind", sa.String(128)),
        when("created_at", nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_index(f"ix_ledger_sessions{S}_agent", f"ledger_sessions{S}", ["agent"])
    op.create_index(f"ix_ledger_sessions{S}_channel", f"ledger_sessions{S}", ["channel"])

    op.create_table(
        f"ledger_generations{S}",
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
        when("pruned_at"),
    )
    generations = f"ledger_generations{S}"
    op.create_index(f"ix_ledger_generations{S}_session_key", generations, ["session_key"])
    op.create_index(f"ix_ledger_generations{S}_status", generations, ["status"])
    op.create_index(f"ix_ledger_generations{S}_updated_at", generations, ["updated_at"])
    op.create_index(
        f"ix_ledger_generations{S}_resumable_state", generations, ["resumable", "state"]
    )

    op.create_table(
        f"ledger_runs{S}",
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
    op.create_index(f"ix_ledger_runs{S}_session_id", f"ledger_runs{S}", ["session_id"])
    op.create_index(f"ix_ledger_runs{S}_status", f"ledger_runs{S}", ["status"])
    op.create_index(f"ix_ledger_runs{S}_started_at", f"ledger_runs{S}", ["started_at"])
    op.create_index(f"ix_ledger_runs{S}_updated_at", f"ledger_runs{S}", ["updated_at"])

    op.create_table(
        f"ledger_entries{S}",
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
        sa.UniqueConstraint("session_id", "entry_id", name=f"uq_ledger_entries{S}_entry"),
    )

    op.create_table(
        f"ledger_receipts{S}",
        sa.Column("event_id", ID, primary_key=True),
        sa.Column("session_key", KEY, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("current_session_id", ID),
        sa.Column("outcome", SHORT, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        when("recorded_at", nullable=False),
    )
    op.create_index(
        f"ix_ledger_receipts{S}_outcome_recorded_at",
        f"ledger_receipts{S}",
        ["outcome", "recorded_at"],
    )

    op.create_table(
        f"sessionledger_tracking{S}",
        sa.Column("application_name", sa.String(32), primary_key=True),
        sa.Column("notification_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
    )


def downgrade() -> None:
    for table in ("sessionledger_tracking", *(f"ledger_{t}" for t in _READ_MODELS)):
        op.drop_table(f"{table}{S}")
    with op.batch_alter_table("ledger_generations") as batch:
        batch.drop_column("pruned_at")


_READ_MODELS = ("receipts", "entries", "runs", "generations", "sessions")
