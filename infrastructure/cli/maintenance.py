"""`sessionledger verify|rebuild|recover|prune|bindings check`: looking after a store,
safe to run while `serve` keeps serving. Every repair is an event in the log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

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
    short,
    when,
)
from sessionledger.infrastructure.cli.views import mismatches_table

bindings_app = typer.Typer(help="CLI resume bindings: probe their transcripts, drop dead ones.")
app.add_typer(bindings_app, name="bindings")


@app.command()
def verify(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Check every transcript hash chain in the log and compare every read model with a
    fresh fold of the log (bounded memory); exit 1 on any mismatch."""
    console = Console(stderr=True)
    with opened_ledger(db) as ledger, reported_failures():
        head = ledger.positions()[1]
        with progress(console, quiet=as_json) as bar:
            task = bar.add_task("verify", total=2 * head)
            report = ledger.verify(on_progress=lambda n: bar.advance(task, n))
    if as_json:
        print_json(report)
    elif not report.ok:
        Console().print(mismatches_table(report.mismatches))
        more = report.mismatch_count - len(report.mismatches)
        typer.echo(
            f"{report.mismatch_count} mismatches" + (f" ({more} not listed)" if more else "")
        )
    else:
        typer.echo(
            f"ok: {report.events} events, {report.chains} transcript chains "
            f"({report.entries} entries) intact; the read models equal a fresh fold of the log "
            f"at position {report.position}"
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def rebuild(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Rebuild the read models from the log while the store keeps serving (readers see
    the old rows until the new ones are complete)."""
    console = Console(stderr=True)
    with opened_ledger(db) as ledger, reported_failures():
        head = ledger.positions()[1]
        with progress(console, quiet=as_json) as bar:
            task = bar.add_task("rebuild", total=head)
            position = ledger.rebuild(on_progress=lambda n: bar.advance(task, n))
    if as_json:
        print_json({"position": position})
    else:
        typer.echo(f"rebuilt the read models up to position {position}")


@app.command()
def recover(
    db: DbOption = None,
    stale_after: Annotated[
        str, typer.Option("--stale-after", help="A run running longer than this (30m, 2h).")
    ] = "30m",
    as_json: JsonOption = False,
) -> None:
    """Close runs whose runner is gone (running longer than --stale-after) with an
    explicit `interrupted` outcome and a stopReason, written by `system`."""
    threshold = duration(stale_after, "--stale-after")
    with opened_ledger(db) as ledger, reported_failures():
        report = ledger.recover(threshold)
    if as_json:
        print_json({**_plain(report), "closed": report.closed})
        return
    table = Table(title="stale runs", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("run", "session", "started", "outcome", "reason"):
        table.add_column(column, overflow="fold")
    for run in report.runs:
        key = f"{run.session_key} {short(run.session_id)}"
        table.add_row(run.run_id, key, when(run.started_at), run.outcome, run.reason or "")
    if report.runs:
        Console().print(table)
    typer.echo(f"{report.closed} stale runs closed as interrupted")


@app.command()
def prune(
    db: DbOption = None,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Untouched for longer than this (30d, 2w).")
    ] = "30d",
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Write each transcript to DIR/<sessionId>.jsonl first."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Prune old generations (not current, not running): a `generation.pruned` event
    each, whose fold drops their transcript rows. The log keeps the events."""
    threshold = duration(older_than, "--older-than")
    if export is not None and export.exists() and not export.is_dir():
        fail(f"--export: {export} is not a directory")
    with opened_ledger(db) as ledger, reported_failures():
        report = ledger.prune(threshold, export_dir=str(export) if export else None)
    if as_json:
        print_json({**_plain(report), "pruned": report.pruned})
        return
    table = Table(title="generations", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("session", "generation", "entries", "pruned", "export / reason"):
        table.add_column(column, overflow="fold")
    for g in report.generations:
        detail = g.export or "" if g.pruned else g.reason or ""
        table.add_row(
            g.session_key, g.session_id, str(g.entries), "yes" if g.pruned else "no", detail
        )
    if report.generations:
        Console().print(table)
    typer.echo(f"{report.pruned} generations pruned")


@bindings_app.command("check")
def bindings_check(
    directory: Annotated[
        Path, typer.Option("--dir", help="The directory of <cliSessionId>.jsonl transcripts.")
    ],
    db: DbOption = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Drop dead bindings (reason missing-transcript).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Probe the transcript file of every current CLI resume binding; exit 1 if any is
    missing and --fix was not given."""
    with opened_ledger(db) as ledger, reported_failures():
        report = ledger.check_bindings(str(directory), fix=fix)
    dead = report.dead
    if as_json:
        print_json({**_plain(report), "dead": len(dead)})
    else:
        table = Table(title="dead bindings", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("session", "provider", "cliSessionId", "dropped"):
            table.add_column(column, overflow="fold")
        for b in dead:
            dropped = "yes" if b.dropped else (b.reason or "no")
            table.add_row(b.session_key, b.provider, b.cli_session_id, dropped)
        if dead:
            Console().print(table)
        typer.echo(f"{len(report.bindings)} bindings checked, {len(dead)} without a transcript")
    if dead and not fix:
        raise typer.Exit(1)


def _plain(report: object) -> dict[str, object]:
    from sessionledger.infrastructure.cli.common import jsonable

    value = jsonable(report)
    assert isinstance(value, dict)
    return value
