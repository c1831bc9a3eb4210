"""`sessionledger db upgrade|current`: the schema, owned by alembic."""

from __future__ import annotations

import typer

from sessionledger.infrastructure.cli.common import (
    DbOption,
    JsonOption,
    app,
    missing_sqlite_file,
    opened_database,
    print_json,
    reported_failures,
    shown_url,
)
from sessionledger.infrastructure.schema import (
    current_revision,
    ensure_schema,
    head_revision,
    known_revisions,
)
from sessionledger.infrastructure.settings import database_url

db_app = typer.Typer(help="The database schema (alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Create the schema on a new database or upgrade an old one to this version's head."""
    with reported_failures(), opened_database(db) as database:
        before = current_revision(database.engine)
        after = ensure_schema(database.engine, "always")
        data = {"db": shown_url(database.url), "previous": before, "revision": after}
    if as_json:
        print_json(data)
    elif before == after:
        typer.echo(f"{data['db']}: already at revision {after}")
    else:
        typer.echo(f"{data['db']}: upgraded from {before or 'an empty database'} to {after}")


@db_app.command("current")
def db_current(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Show the database's schema revision and the one this version needs."""
    url = database_url(db)
    with reported_failures():
        if missing_sqlite_file(url):
            revision = None  # do not create the file just to look at it
        else:
            with opened_database(url) as database:
                revision = current_revision(database.engine)
    head = head_revision()
    if revision == head:
        state = "up to date"
    elif revision is None:
        state = "empty: run `sessionledger db upgrade`"
    elif revision in known_revisions():
        state = "old: run `sessionledger db upgrade`"
    else:
        state = "unknown revision (written by a newer or foreign version)"
    if as_json:
        print_json(
            {
                "db": shown_url(url),
                "revision": revision,
                "head": head,
                "upToDate": revision == head,
            }
        )
    else:
        typer.echo(f"{shown_url(url)}: revision {revision or '-'} (head {head}): {state}")
