"""The operator commands of the CLI: sessions, transcript, reset, status, audit, verify,
rebuild, ingest and serve, through typer's CliRunner with --json parsed back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from sessionledger.infrastructure.cli import app
from sessionledger.infrastructure.ledger import Ledger

runner = CliRunner()
KEY = "agent:main:telegram:direct:4242"


def invoke(*args: str, code: int = 0, stdin: str | None = None) -> Any:
    result = runner.invoke(app, list(args), input=stdin)
    assert result.exit_code == code, result.output
    return result


def as_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json").stdout)


def events_jsonl(session_id: str, count: int) -> str:
    lines = [
        {
            "type": "run.started",
            "eventId": "ingest-start",
            "sessionKey": KEY,
            "sessionId": session_id,
            "runId": "r1",
            "occurredAt": "2026-11-21T10:00:00Z",
            "writer": "runner",
            "trigger": "user",
        }
    ] + [
        {
            "type": "transcript.appended",
            "eventId": f"ingest-{n}",
            "sessionKey": KEY,
            "sessionId": session_id,
            "occurredAt": "2026-11-21T10:00:01Z",
            "writer": "runner",
            "entry": {
                "id": f"m{n}",
                "role": "assistant" if n % 2 else "user",
                "content": f"turn {n}",
                "timestamp": "2026-11-21T10:00:01Z",
            },
        }
        for n in range(count)
    ]
    return "\n".join(json.dumps(line) for line in lines) + "\n"


@pytest.fixture
def opened(sqlite_url: str) -> tuple[str, str]:
    with Ledger.open(sqlite_url) as ledger:
        return sqlite_url, ledger.resolve(KEY).session.session_id


@pytest.mark.parametrize(
    "command",
    ["serve", "sessions", "status", "audit", "transcript", "reset", "verify", "rebuild", "ingest"],
)
def test_every_operator_command_has_help(command: str) -> None:
    assert "Usage" in invoke(command, "--help").output


def test_ingest_from_a_file_then_again_from_stdin(opened: tuple[str, str], tmp_path: Path) -> None:
    url, sid = opened
    source = tmp_path / "events.jsonl"
    source.write_text(events_jsonl(sid, 25))
    first = as_json("ingest", str(source), "--db", url, "--batch", "10")
    assert first["outcomes"] == {"applied": 26}
    # A retried file records nothing twice.
    again = json.loads(
        invoke("ingest", "-", "--db", url, "--json", stdin=source.read_text()).stdout
    )
    assert again["events"] == 26
    with Ledger.open(url) as ledger:
        assert ledger.session(KEY).entry_count == 25
        assert len(ledger.log()) == 2 + 26


def test_ingest_names_the_line_and_field_of_bad_input(
    opened: tuple[str, str], tmp_path: Path
) -> None:
    url, sid = opened
    source = tmp_path / "bad.jsonl"
    source.write_text(events_jsonl(sid, 1) + '{"type": "run.started"}\n')
    result = invoke("ingest", str(source), "--db", url, "--batch", "1", code=1)
    assert "line 3" in result.output and "events[0]" in result.output
    source.write_text("{not json\n")
    assert "line 1: not JSON" in invoke("ingest", str(source), "--db", url, code=1).output


def test_sessions_transcript_and_status(opened: tuple[str, str], tmp_path: Path) -> None:
    url, sid = opened
    source = tmp_path / "events.jsonl"
    source.write_text(events_jsonl(sid, 3))
    invoke("ingest", str(source), "--db", url)
    (row,) = as_json("sessions", "--db", url, "--status", "running")["items"]
    assert (row["sessionKey"], row["entryCount"], row["hasActiveRun"]) == (KEY, 3, True)
    assert as_json("sessions", "--db", url, "--status", "done")["items"] == []
    entries = as_json("transcript", KEY, "--db", url)["entries"]
    assert [e["entryId"] for e in entries] == ["m0", "m1", "m2"]
    report = as_json("status", "--db", url, "--stuck-after", "1m")
    assert report["byStatus"] == {"running": 1}
    assert [r["runId"] for r in report["stuckRuns"]] == ["r1"]  # started "in 2026-11-21 10:00"
    assert "sessions by status" in invoke("status", "--db", url).output
    assert "--stuck-after" in invoke("status", "--db", url, "--stuck-after", "soon", code=1).output


def test_reset_with_cas_and_audit_shows_the_fenced_late_event(opened: tuple[str, str]) -> None:
    url, sid = opened
    mismatch = invoke("reset", KEY, "--db", url, "--expected", "stale", code=1)
    assert "error:" in mismatch.output and sid in mismatch.output
    reset = as_json("reset", KEY, "--db", url, "--expected", sid)
    assert reset["previousSessionId"] == sid
    with Ledger.open(url) as ledger:
        ledger.set_binding(KEY, "claude-cli", "x")  # on the new generation
    entries = as_json("audit", KEY, "--db", url)["entries"]
    assert [e["type"] for e in entries][-3:] == [
        "session.rotated",
        "generation.opened",
        "binding.set",
    ]
    assert "audit of" in invoke("audit", KEY, "--db", url).output
    assert invoke("audit", "agent:nobody", "--db", url, code=1).output.startswith("error:")


def test_verify_catches_a_row_changed_behind_the_stores_back_and_rebuild_repairs_it(
    opened: tuple[str, str],
) -> None:
    url, _ = opened
    assert as_json("verify", "--db", url)["ok"] is True
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE ledger_generations SET status = 'done'"))
    engine.dispose()
    result = invoke("verify", "--db", url, "--json", code=1)
    mismatches = json.loads(result.stdout)["mismatches"]
    assert {(m["table"], m["field"]) for m in mismatches} == {("generations", "status")}
    assert "rebuilt" in invoke("rebuild", "--db", url).output
    assert as_json("verify", "--db", url)["ok"] is True


def test_serve_refuses_a_public_address_without_tokens(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SESSIONLEDGER_READ_TOKENS", raising=False)
    monkeypatch.delenv("SESSIONLEDGER_ADMIN_TOKENS", raising=False)
    result = invoke("serve", "--db", sqlite_url, "--host", "0.0.0.0", code=1)
    assert "refusing to bind" in result.output
