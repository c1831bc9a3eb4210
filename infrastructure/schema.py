"""Alembic owns every table; this module upgrades and checks the schema revision."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

import sessionledger.migrations
from sessionledger.domain.errors import SchemaMismatch
from sessionledger.infrastructure.database import write_transaction

UpgradePolicy = Literal["auto", "always", "never"]


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(sessionledger.migrations.__file__).parent))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# pg_advisory_xact_lock key: API processes starting together upgrade one at a time.
_UPGRADE_LOCK = 0x5E55_1013


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (default: the newest this code knows).

    One transaction, serialised against other upgraders: on PostgreSQL by an advisory
    lock taken before alembic reads the current revision, on SQLite by taking the
    write lock at BEGIN (on engines made by infrastructure.database).
    """
    config = alembic_config()
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ensure_schema(engine: Engine, policy: UpgradePolicy = "auto") -> str:
    """Refuse a schema this code does not know; upgrade one it does, as the policy allows.

    "auto" creates an empty database and upgrades an old embedded SQLite file, but asks
    for `sessionledger db upgrade` on an old server database, where several processes
    may start at once.
    """
    # Tables before revision: an upgrader committing in between (tables and revision
    # together) then reads as "at head", never as "tables without a revision".
    tables = inspect(engine).get_table_names()
    revision = current_revision(engine)
    head = head_revision()
    if revision == head:
        return head
    if revision is not None and revision not in known_revisions():
        raise SchemaMismatch(
            f"database schema revision {revision!r} is unknown to this sessionledger "
            f"(it knows up to {head!r}); it was written by a newer or foreign version"
        )
    if revision is None and tables:
        raise SchemaMismatch(
            "database has tables but no sessionledger schema revision; refusing to use it"
        )
    allowed = policy == "always" or (
        policy == "auto" and (revision is None or engine.dialect.name == "sqlite")
    )
    if not allowed:
        raise SchemaMismatch(
            f"database schema is at revision {revision!r}, this code needs {head!r}: "
            "run `sessionledger db upgrade`"
        )
    upgrade(engine)
    return head
