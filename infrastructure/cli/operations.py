"""`sessionledger serve|ingest|status|audit`: running a store and reporting on it."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console

from sessionledger.domain.errors import InvalidEvent
from sessionledger.domain.values import MAX_BATCH_EVENTS
from sessionledger.infrastructure.cli.common import (
    DbOption,
    JsonOption,
    app,
    duration,
    fail,
    opened_ledger,
    print_json,
    progress,
    reported_failures,
)
from sessionledger.infrastructure.cli.views import audit_tables, status_tables
from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.validation import invalid_input
from sessionledger.projections.audit import to_markdown


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback unless told).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    read_tokens: Annotated[
        str | None,
        typer.Option(envvar="SESSIONLEDGER_READ_TOKENS", help="Comma-separated read tokens."),
    ] = None,
    admin_tokens: Annotated[
        str | None,
        typer.Option(envvar="SESSIONLEDGER_ADMIN_TOKENS", help="Comma-separated admin tokens."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            envvar="SESSIONLEDGER_POLICY",
            help='Freshness policies as JSON: {"default": {...}, "byChannel": {...}, '
            '"byKind": {...}}',
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json)."""
    from sessionledger.infrastructure.server import UnsafeBind
    from sessionledger.infrastructure.server import serve as run

    try:
        settings = ServerSettings.from_environment(read_tokens, admin_tokens, policy)
    except ValidationError as e:
        problem = invalid_input(e.errors(include_url=False), within=("policy",), whole="policy")
        fail(f"bad server settings: {problem}")
    except ValueError as e:  # the policy is not JSON
        fail(f"bad server settings: policy: {str(e).splitlines()[0]}")
    with opened_ledger(db) as ledger:
        try:
            run(ledger, host=host, port=port, settings=settings)
        except UnsafeBind as e:
            fail(str(e))


@contextmanager
def _lines(source: str) -> Iterator[Iterator[str]]:
    if source == "-":
        yield iter(sys.stdin)
        return
    with open(source) as handle:
        yield iter(handle)


def _batches(lines: Iterator[str], size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """JSONL lines in batches, each with the line number of its first event."""
    batch: list[dict[str, Any]] = []
    first = 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"line {number}: not JSON ({e.msg})")
        if not isinstance(event, dict):
            fail(f"line {number}: an event must be a JSON object")
        if not batch:
            first = number
        batch.append(event)
        if len(batch) == size:
            yield first, batch
            batch = []
    if batch:
        yield first, batch


@app.command()
def ingest(
    source: Annotated[
        str, typer.Argument(help="A JSONL file of events (HTTP body shape), or - for stdin.")
    ] = "-",
    db: DbOption = None,
    batch: Annotated[int, typer.Option(min=1, max=MAX_BATCH_EVENTS)] = 500,
    as_json: JsonOption = False,
) -> None:
    """Record events from JSONL, in batches; a retried file records nothing twice."""
    console = Console(stderr=True)
    outcomes: Counter[str] = Counter()
    rejected: list[dict[str, Any]] = []
    total = None
    if source != "-":
        if not Path(source).is_file():
            fail(f"{source}: no such file")
        with open(source) as counting:
            total = sum(1 for line in counting if line.strip())
    with (
        opened_ledger(db) as ledger,
        reported_failures(),
        _lines(source) as lines,
        progress(console, quiet=as_json) as bar,
    ):
        task = bar.add_task("ingest", total=total)
        for first_line, events in _batches(lines, batch):
            try:
                results = ledger.record(events)
            except InvalidEvent as e:
                fail(f"batch from line {first_line}: {e}")
            for result in results:
                outcomes[result.outcome] += 1
                if result.outcome == "rejected":
                    rejected.append({"eventId": result.event_id, "reason": result.reason})
            bar.advance(task, len(events))
    summary = {"events": sum(outcomes.values()), "outcomes": dict(outcomes), "rejected": rejected}
    if as_json:
        print_json(summary)
        return
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    typer.echo(f"{summary['events']} events: {counts or 'none'}")
    for item in rejected[:20]:
        typer.echo(f"  rejected {item['eventId']}: {item['reason']}")


@app.command()
def status(
    db: DbOption = None,
    window: Annotated[
        str, typer.Option("--window", help="Failures, tokens and late events over this (1h).")
    ] = "1h",
    stuck_after: Annotated[
        str, typer.Option("--stuck-after", help="A run older than this is stuck (15m, 1h).")
    ] = "15m",
    as_json: JsonOption = False,
) -> None:
    """The operator's status report: sessions, active and stuck runs, failures and tokens."""
    minutes = max(1, int(duration(stuck_after, "--stuck-after").total_seconds() // 60))
    window_minutes = max(1, int(duration(window, "--window").total_seconds() // 60))
    with opened_ledger(db) as ledger, reported_failures():
        report = ledger.status_report(stuck_after_minutes=minutes, window_minutes=window_minutes)
    if as_json:
        print_json(report)
        return
    console = Console()
    for table in status_tables(report):
        console.print(table)


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--as-of: {text!r} is not an ISO 8601 time like 2026-11-21T10:00:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def audit(
    session_key: Annotated[str, typer.Argument(help="The sessionKey (all its generations).")],
    db: DbOption = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run's events.")] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Replay up to this recordedAt (ISO 8601; UTC if bare)."),
    ] = None,
    position: Annotated[
        int | None, typer.Option("--position", min=0, help="Replay up to this log position.")
    ] = None,
    output: Annotated[
        Literal["table", "json", "markdown"],
        typer.Option("--format", help="table, json, or markdown (an incident report)"),
    ] = "table",
    as_json: JsonOption = False,
) -> None:
    """Every event of a key (or one run) in log order, with what it did to which row."""
    if as_of is not None and position is not None:
        fail("give --as-of or --position, not both")
    moment = _moment(as_of) if as_of is not None else None
    with opened_ledger(db) as ledger, reported_failures():
        report = ledger.audit(session_key, run_id=run, as_of=moment, position=position)
    if as_json or output == "json":
        print_json(report)
    elif output == "markdown":
        typer.echo(to_markdown(report), nl=False)
    else:
        console = Console()
        for part in audit_tables(report):
            console.print(part)
