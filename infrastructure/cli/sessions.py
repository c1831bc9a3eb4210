"""`sessionledger sessions|transcript|reset`: reading rows and rotating a key."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sessionledger.domain.values import ResetReason, Status
from sessionledger.infrastructure.cli.common import (
    DbOption,
    JsonOption,
    app,
    opened_ledger,
    print_json,
    reported_failures,
    short,
)
from sessionledger.infrastructure.cli.views import sessions_table, transcript_table


@app.command()
def sessions(
    db: DbOption = None,
    status: Annotated[Status | None, typer.Option(help="Only sessions in this status.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    active_within: Annotated[
        int | None,
        typer.Option(
            "--active-within", help="Minutes since the last user interaction (or running)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    cursor: Annotated[str | None, typer.Option(help="nextCursor of the previous page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List sessions (one row per key, its current generation)."""
    with opened_ledger(db) as ledger, reported_failures():
        page = ledger.sessions(
            status=status,
            agent=agent,
            channel=channel,
            active_within_minutes=active_within,
            limit=limit,
            cursor=cursor,
        )
    if as_json:
        print_json({"items": page.items, "nextCursor": page.next_cursor})
        return
    console = Console()
    console.print(sessions_table(page.items))
    if page.next_cursor:
        console.print(f"more: --cursor '{page.next_cursor}'", highlight=False)


@app.command()
def transcript(
    session_key: Annotated[str, typer.Argument(help="The sessionKey.")],
    db: DbOption = None,
    session_id: Annotated[
        str | None, typer.Option("--session-id", help="A generation (default: current).")
    ] = None,
    lineage: Annotated[
        bool, typer.Option("--lineage", help="The whole lineage, oldest generation first.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Print a generation's transcript, or its whole lineage's."""
    with opened_ledger(db) as ledger, reported_failures():
        entries = ledger.transcript(session_key, session_id=session_id, lineage=lineage)
    if as_json:
        print_json({"sessionKey": session_key, "entries": entries})
        return
    Console().print(transcript_table(entries, title=f"transcript of {session_key}"))


@app.command()
def reset(
    session_key: Annotated[str, typer.Argument(help="The sessionKey.")],
    db: DbOption = None,
    reason: Annotated[ResetReason, typer.Option(help="Why (hard resets carry nothing).")] = "reset",
    expected: Annotated[
        str | None,
        typer.Option("--expected", help="Only if the key is still at this sessionId (CAS)."),
    ] = None,
    session_id: Annotated[
        str | None, typer.Option("--session-id", help="The new sessionId (default: random).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Rotate a key to a new generation; fails if --expected no longer matches."""
    with opened_ledger(db) as ledger, reported_failures():
        result = ledger.reset(
            session_key, reason=reason, expected_session_id=expected, session_id=session_id
        )
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"{session_key}: {short(result.previous_session_id)} -> {result.session_id} ({reason})"
    )
