"""The `sessionledger` command line: tables for people, `--json` for machines, and a
non-zero exit with one line on stderr for every failure it anticipates."""

from sessionledger.infrastructure.cli import (  # noqa: F401  (registers commands)
    db,
    demo,
    maintenance,
    operations,
    sessions,
)
from sessionledger.infrastructure.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
