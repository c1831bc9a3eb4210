"""Running runs get a partial index of their own, in place of every run's start time.

`ix_ledger_runs_started_at` held an entry for every run ever started, but the only
queries that read runs by start time read the running ones: the status report's active
runs and `recover`'s stale runs. `ix_ledger_runs_running` (PostgreSQL: the order only)
and `ix_ledger_runs_running_covering` (SQLite: with the report's columns, so the active
runs are one read of the index, no row lookups and no sort) hold the running runs alone,
by `(status, started_at, run_id)`, live and `_shadow` alike (`projections.tables`). Both
queries name the status as a literal so the planner can use it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SUFFIXES = ("", "_shadow")
RUNNING = sa.text("status = 'running'")
ORDER = ["status", "started_at", "run_id"]  # the status first: see projections.tables
SHOWN = ["session_key", "session_id", "trigger", "writer", "model", "provider"]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for s in SUFFIXES:
        runs = f"ledger_runs{s}"
        op.drop_index(f"ix_ledger_runs{s}_started_at", table_name=runs)
        if sqlite:
            name, columns = f"ix_ledger_runs{s}_running_covering", [*ORDER, *SHOWN]
        else:
            name, columns = f"ix_ledger_runs{s}_running", ORDER
        op.create_index(name, runs, columns, sqlite_where=RUNNING, postgresql_where=RUNNING)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for s in SUFFIXES:
        runs = f"ledger_runs{s}"
        suffix = "_running_covering" if sqlite else "_running"
        op.drop_index(f"ix_ledger_runs{s}{suffix}", table_name=runs)
        op.create_index(f"ix_ledger_runs{s}_started_at", runs, ["started_at"])
