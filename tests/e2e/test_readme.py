"""The README's examples run as written and print what their comments say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_the_python_example_prints_what_it_says(tmp_path: Path) -> None:
    (block,) = python_blocks()
    expected = [
        m.group(1).strip()
        for line in block.splitlines()
        if line.lstrip().startswith(("print(", "    print("))
        and (m := re.search(r"\)\s+#\s*(.*)$", line))
    ]
    assert len(expected) >= 4
    done = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected


def test_the_cli_commands_it_lists_exist() -> None:
    from typer.testing import CliRunner

    from sessionledger.infrastructure.cli import app

    listed = re.findall(r"^    sessionledger ((?:db )?\w+)", README.read_text(), re.MULTILINE)
    assert listed
    for command in listed:
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, (command, result.output)


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)


def test_the_http_example_runs_against_a_real_server(tmp_path: Path) -> None:
    from tests.e2e.http_server import start_server

    (block,) = bash_blocks()
    expected = [
        m.group(1).strip()
        for line in block.splitlines()
        if (m := re.search(r"\s#\s+(\S.*)$", line)) and not line.lstrip().startswith("#")
    ]
    server = start_server(
        f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path, read_tokens=(), admin_tokens=()
    )
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            capture_output=True,
            text=True,
            env={**os.environ, "BASE": server.url},
            timeout=120,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    # Lines whose comment states the output; the reset prints the new sessionId unchecked.
    assert [p for p in printed if len(p) != 32] == expected
