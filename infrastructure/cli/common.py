"""What every command shares: options, one-line failures, JSON output, opening the store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import sqlalchemy.exc
import typer
from pydantic import BaseModel
from pydantic.alias_generators import to_camel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import make_url

from sessionledger.domain.errors import LedgerError
from sessionledger.infrastructure.database import Database, translate_faults
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.settings import DB_ENV, database_url

app = typer.Typer(
    name="sessionledger",
    help="Event-sourced session store for AI-agent chat gateways.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar=DB_ENV,
        help="SQLAlchemy URL or SQLite file path [default: the embedded file]",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def reported_failures() -> Iterator[None]:
    """Known failures become `error: <one line>` and exit status 1."""
    try:
        with translate_faults():
            yield
    except LedgerError as e:
        fail(one_line(str(e)))
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as e:
        fail(f"bad database URL: {one_line(str(e))}")
    except sqlalchemy.exc.DBAPIError as e:
        fail(f"database error: {one_line(str(e.orig or e))}")


def one_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "failed"


def shown_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def jsonable(value: Any) -> Any:
    """Rows (dataclasses) and models as camelCase JSON values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if is_dataclass(value) and not isinstance(value, type):
        return {to_camel(f.name): jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(data: Any) -> None:
    typer.echo(json.dumps(jsonable(data), indent=2))


def missing_sqlite_file(url: str) -> bool:
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return False
    return not Path(name).exists()


@contextmanager
def opened_database(db: str | None) -> Iterator[Database]:
    database = Database(database_url(db))
    try:
        yield database
    finally:
        database.close()


@contextmanager
def opened_ledger(db: str | None) -> Iterator[Ledger]:
    """The store, with failures reported as one line (exit 1)."""
    with reported_failures(), Ledger.open(db) as ledger:
        yield ledger


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "minutes"}


def duration(text: str, option: str) -> timedelta:
    """`90s`, `15m`, `1h`, `30d`, `2w`; a bare number means minutes."""
    match = _DURATION.match(text)
    if not match:
        fail(f"{option}: {text!r} is not a duration like 15m, 1h or 30d")
    amount, unit = match.groups()
    value = timedelta(**{_UNITS[unit]: int(amount)})
    if value <= timedelta(0) or value > timedelta(days=366):
        fail(f"{option}: must be between 1s and 366d")
    return value


def progress(console: Console, quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )


def short(session_id: str | None) -> str:
    return session_id[:8] if session_id else "-"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"
