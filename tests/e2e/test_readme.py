"""The README's examples run as written and print what their comments say."""

from __future__ import annotations

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

    from infrastructure.cli import app

    listed = re.findall(r"^    sessionledger ((?:db )?\w+)", README.read_text(), re.MULTILINE)
    assert listed
    for command in listed:
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, (command, result.output)
