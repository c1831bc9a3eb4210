"""Runs carry agent and channel; indexes so every query of the status report is served.

- `ledger_runs.agent`, `.channel` (and on the `_shadow` twin): parsed from the run's
  session key like the session row's (`domain.values.KeyShape`), so the
  report groups runs by them in SQL instead of one grouped row per key. Existing rows
  are backfilled here in SQL (the parse written out below; a test checks it against a
  rebuild on SQLite and PostgreSQL), so no `rebuild` is needed after upgrading.
- `ix_ledger_runs_status_updated_at` replaces `ix_ledger_runs_status`: it serves the
  same lookups and the newest failures of a window.
- `ix_ledger_generations_status_state` replaces `ix_ledger_generations_status`:
  sessions by status (current generations) is a covering scan.
- `ix_ledger_sessions_agent_channel` replaces `ix_ledger_sessions_agent`: live keys
  per agent and per channel are one covering scan in index order.
- SQLite only, live tables only: `ix_ledger_runs_window_groups` (which replaces
  `ix_ledger_runs_updated_at` there) and `ix_ledger_runs_group_usage`, covering
  indexes for the usage of runs that ended in a window (see
  `projections.tables._usage_indexes` for why only there).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SUFFIXES = ("", "_shadow")
GROUPS = ["status", "agent", "channel", "model", "provider"]
TOKENS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"]


def _backfill(table: str, find: str) -> str:
    """KeyShape.parse in SQL: `agent:<agent>:<channel>:<kind>…` gives agent and channel
    (`agent:<agent>:<x>` has no channel; an empty part is NULL; an empty agent makes
    the key unshaped); `cron:…` and `hook:…` give that channel and no agent. `find` is
    the dialect's 1-based substring position (0: absent)."""
    after_agent = "substr(session_key, 7)"
    agent_end = f"{find}({after_agent}, ':')"
    after_channel_start = f"substr(session_key, 7 + {agent_end})"
    channel_end = f"{find}({after_channel_start}, ':')"
    shaped = f"substr(session_key, 1, 6) = 'agent:' AND {agent_end} > 1"
    return f"""
        UPDATE {table} SET
          agent = CASE WHEN {shaped} THEN substr(session_key, 7, {agent_end} - 1) END,
          channel = CASE
            WHEN {shaped} THEN
              CASE WHEN {channel_end} > 0
                THEN nullif(substr({after_channel_start}, 1, {channel_end} - 1), '')
              END
            WHEN substr(session_key, 1, 5) IN ('cron:', 'hook:') THEN substr(session_key, 1, 4)
          END
    """


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for s in SUFFIXES:
        runs, generations, sessions = (
            f"ledger_{t}{s}" for t in ("runs", "generations", "sessions")
        )
        op.add_column(runs, sa.Column("agent", sa.String(128)))
        op.add_column(runs, sa.Column("channel", sa.String(128)))
        op.execute(_backfill(runs, "instr" if sqlite else "strpos"))
        op.drop_index(f"ix_ledger_runs{s}_status", table_name=runs)
        op.create_index(f"ix_ledger_runs{s}_status_updated_at", runs, ["status", "updated_at"])
        op.drop_index(f"ix_ledger_generations{s}_status", table_name=generations)
        op.create_index(f"ix_ledger_generations{s}_status_state", generations, ["status", "state"])
        op.drop_index(f"ix_ledger_sessions{s}_agent", table_name=sessions)
        op.create_index(f"ix_ledger_sessions{s}_agent_channel", sessions, ["agent", "channel"])
    if sqlite:
        op.drop_index("ix_ledger_runs_updated_at", table_name="ledger_runs")
        op.create_index("ix_ledger_runs_window_groups", "ledger_runs", ["updated_at", *GROUPS])
        op.create_index(
            "ix_ledger_runs_group_usage", "ledger_runs", [*GROUPS, "updated_at", *TOKENS]
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_ledger_runs_group_usage", table_name="ledger_runs")
        op.drop_index("ix_ledger_runs_window_groups", table_name="ledger_runs")
        op.create_index("ix_ledger_runs_updated_at", "ledger_runs", ["updated_at"])
    for s in SUFFIXES:
        runs, generations, sessions = (
            f"ledger_{t}{s}" for t in ("runs", "generations", "sessions")
        )
        op.drop_index(f"ix_ledger_sessions{s}_agent_channel", table_name=sessions)
        op.create_index(f"ix_ledger_sessions{s}_agent", sessions, ["agent"])
        op.drop_index(f"ix_ledger_generations{s}_status_state", table_name=generations)
        op.create_index(f"ix_ledger_generations{s}_status", generations, ["status"])
        op.drop_index(f"ix_ledger_runs{s}_status_updated_at", table_name=runs)
        op.create_index(f"ix_ledger_runs{s}_status", runs, ["status"])
        with op.batch_alter_table(runs) as batch:
            batch.drop_column("channel")
            batch.drop_column("agent")
