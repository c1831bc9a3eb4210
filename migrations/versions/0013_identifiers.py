"""The store's identifiers: each runId and sessionId names one session key.

`sessionledger_identifiers` holds every runId and sessionId with the key that took it,
under a primary key on (field, identifier), so the database holds each to one key. The
write path inserts them in the transaction that logs the events introducing them
(`run.started`, `generation.opened`) and looks them up to refuse one another key uses,
instead of reading the read models for it. Not a read model: no shadow twin, and
rebuilds leave it alone.

Upgrading fills it from the log (the events, not the read models, which may lag
behind it), the first key to use an identifier keeping it. Downgrading drops it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLE = "sessionledger_identifiers"
# The events that introduce an identifier, by topic class name: the payload field and
# the field the identifier answers to. Topics name the classes under the module path
# they were written with ("sessionledger.domain.events:…", earlier "domain.events:…").
INTRODUCED = {"RunStarted": ("run_id", "runId"), "GenerationOpened": ("session_id", "sessionId")}
PAGE = 1000


def upgrade() -> None:
    identifiers = op.create_table(
        TABLE,
        sa.Column("field", sa.String(16), primary_key=True),
        sa.Column("identifier", sa.String(128), primary_key=True),
        sa.Column("session_key", sa.String(512), nullable=False),
    )
    connection = op.get_bind()
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    # The first key keeps an identifier: the write path refused it to any later one.
    insert = dialect.insert(identifiers).on_conflict_do_nothing()
    topics = [
        f"{module}:{name}"
        for module in ("sessionledger.domain.events", "domain.events")
        for name in INTRODUCED
    ]
    events = sa.table(
        "sessionledger_events", sa.column("id"), sa.column("topic"), sa.column("state")
    )
    page = (
        sa.select(events.c.id, events.c.topic, events.c.state)
        .where(events.c.topic.in_(topics), events.c.id > sa.bindparam("after"))
        .order_by(events.c.id)
        .limit(PAGE)
    )
    after = 0
    while rows := connection.execute(page, {"after": after}).all():
        connection.execute(insert, [_identifier(topic, state) for _, topic, state in rows])
        after = rows[-1][0]


def _identifier(topic: str, state: bytes) -> dict[str, str]:
    name, field = INTRODUCED[topic.rpartition(":")[2]]
    payload = json.loads(bytes(state))
    return {"field": field, "identifier": payload[name], "session_key": payload["session_key"]}


def downgrade() -> None:
    op.drop_table(TABLE)
