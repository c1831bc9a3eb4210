"""The `sessionledger` command line, through typer's CliRunner and as the installed program."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from sessionledger.infrastructure.cli import app
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.schema import head_revision
from sessionledger.infrastructure.settings import DB_ENV
from tests.helpers import assert_replay_equals_live

runner = CliRunner()


def invoke(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def check_demo(data: dict[str, Any]) -> None:
    telegram, slack = data["keys"]
    rows = {row["sessionKey"]: row for row in data["sessions"]}
    assert set(rows) == {telegram, slack}

    late = data["lateEvent"]
    assert late["outcome"] == "archived"
    assert late["sessionId"] != late["currentSessionId"]
    assert late["archivedGenerationStatus"] == "failed"

    idle = data["idleRollover"]
    assert (idle["rotated"], idle["reason"]) == (True, "idle")
    assert idle["previousSessionId"] == late["currentSessionId"]
    assert idle["bindings"] == rows[telegram]["bindings"] != {}
    assert idle["lineageEntries"] == 3
    assert rows[telegram]["sessionId"] == idle["sessionId"]
    assert (rows[telegram]["status"], rows[telegram]["entryCount"]) == ("new", 0)

    assert (rows[slack]["status"], rows[slack]["entryCount"]) == ("done", 2)
    assert rows[slack]["hasActiveRun"] is False


# -- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["db"], ["db", "upgrade"], ["db", "current"], ["demo"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert "Usage" in result.output


def test_no_arguments_shows_the_commands() -> None:
    result = runner.invoke(app, [])
    assert "demo" in result.output and "db" in result.output


# -- db -----------------------------------------------------------------------------------------


def test_db_current_and_upgrade(database_url: str) -> None:
    before = json.loads(invoke("db", "current", "--db", database_url, "--json").stdout)
    assert (before["revision"], before["head"], before["upToDate"]) == (
        None,
        head_revision(),
        False,
    )
    assert "run `sessionledger db upgrade`" in invoke("db", "current", "--db", database_url).stdout

    upgraded = json.loads(invoke("db", "upgrade", "--db", database_url, "--json").stdout)
    assert (upgraded["previous"], upgraded["revision"]) == (None, head_revision())
    assert "already at revision" in invoke("db", "upgrade", "--db", database_url).stdout

    after = json.loads(invoke("db", "current", "--db", database_url, "--json").stdout)
    assert after["upToDate"] is True


def test_db_urls_print_without_passwords(postgres_url: str) -> None:
    url = postgres_url.replace("@", ":hunter2@", 1)
    result = invoke("db", "upgrade", "--db", url, "--json")
    assert "hunter2" not in result.output
    assert json.loads(result.stdout)["db"].count("***") == 1


def test_db_current_does_not_create_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    data = json.loads(invoke("db", "current", "--db", str(path), "--json").stdout)
    assert (data["revision"], data["upToDate"]) == (None, False)
    assert not path.exists()


# -- demo ---------------------------------------------------------------------------------------


def test_demo_json_on_both_databases(database_url: str) -> None:
    check_demo(json.loads(invoke("demo", "--db", database_url, "--json").stdout))
    with Ledger.open(database_url) as ledger:
        assert_replay_equals_live(ledger)


def test_demo_runs_twice_on_the_same_database(sqlite_url: str) -> None:
    first = json.loads(invoke("demo", "--db", sqlite_url, "--json").stdout)
    second = json.loads(invoke("demo", "--db", sqlite_url, "--json").stdout)
    check_demo(second)
    assert set(first["keys"]).isdisjoint(second["keys"])


def test_demo_uses_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DB_ENV, str(tmp_path / "from-env.db"))
    data = json.loads(invoke("demo", "--json").stdout)
    assert data["db"] == f"sqlite:///{tmp_path / 'from-env.db'}"
    assert (tmp_path / "from-env.db").exists()


def test_demo_fresh_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DB_ENV, str(tmp_path / "untouched.db"))
    data = json.loads(invoke("demo", "--fresh", "--json").stdout)
    check_demo(data)
    assert not Path(data["db"].removeprefix("sqlite:///")).exists()
    assert not (tmp_path / "untouched.db").exists()


def test_demo_prints_a_table_for_people(sqlite_url: str) -> None:
    out = invoke("demo", "--db", sqlite_url).stdout
    assert "sessionKey" in out and "status" in out
    assert "archived" in out and "idle rollover" in out


# -- failures -------------------------------------------------------------------------------


def one_line_error(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return str(lines[0])


def test_a_foreign_database_is_refused_in_one_line(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    for command in (["demo"], ["db", "upgrade"]):
        line = one_line_error(runner.invoke(app, [*command, "--db", sqlite_url]))
        assert "no sessionledger schema revision" in line


def test_an_old_postgres_schema_asks_for_db_upgrade(postgres_url: str) -> None:
    from sessionledger.infrastructure.schema import upgrade

    engine = create_engine(postgres_url, poolclass=NullPool)
    upgrade(engine, "0001")
    engine.dispose()
    line = one_line_error(runner.invoke(app, ["demo", "--db", postgres_url, "--json"]))
    assert "run `sessionledger db upgrade`" in line
    invoke("db", "upgrade", "--db", postgres_url)
    check_demo(json.loads(invoke("demo", "--db", postgres_url, "--json").stdout))


@pytest.mark.parametrize(
    "url, reason",
    [
        ("nosuchdialect://x/y", "bad database URL"),
        ("postgresql://nobody@127.0.0.1:1/none", "database unavailable"),
    ],
)
def test_bad_or_unreachable_databases_fail_in_one_line(url: str, reason: str) -> None:
    for command in (["demo"], ["db", "upgrade"], ["db", "current"]):
        assert reason in one_line_error(runner.invoke(app, [*command, "--db", url]))


@pytest.mark.parametrize(
    "policy, expected",
    [
        ('{"default": {"idleMinutes": "x"}}', "policy.default.idleMinutes: Input should be"),
        ('{"byChannel": {"web": {"surprise": 1}}}', "policy.byChannel.web.surprise: Extra"),
        ('{"default"', "policy: Expecting ':' delimiter"),
    ],
)
def test_a_bad_policy_names_its_field_in_one_line(
    sqlite_url: str, policy: str, expected: str
) -> None:
    """Validation problems are named as everywhere else: the field path, then the message."""
    line = one_line_error(runner.invoke(app, ["serve", "--db", sqlite_url, "--policy", policy]))
    assert line.startswith(f"error: bad server settings: {expected}"), line


# -- the installed program ------------------------------------------------------------------


def test_the_installed_entry_point(tmp_path: Path) -> None:
    program = Path(sys.executable).parent / "sessionledger"
    assert program.exists(), "run `pip install -e .` first"
    env = {**os.environ, DB_ENV: str(tmp_path / "ledger.db")}
    done = subprocess.run(
        [str(program), "demo", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    check_demo(json.loads(done.stdout))

    current = subprocess.run(
        [str(program), "db", "current", "--json"], capture_output=True, text=True, env=env
    )
    assert json.loads(current.stdout)["upToDate"] is True

    failed = subprocess.run(
        [str(program), "demo", "--db", "nosuchdialect://x"], capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: bad database URL") and failed.stdout == ""
