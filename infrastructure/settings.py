"""Where the store lives and how it behaves, from arguments or the environment."""

from __future__ import annotations

import os
from pathlib import Path

DB_ENV = "SESSIONLEDGER_DB"
SNAPSHOT_INTERVAL = 100  # events per aggregate between snapshots, at the least
AGGREGATE_CACHE_SIZE = 10_000
BUSY_TIMEOUT_SECONDS = 30.0


def default_database_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "sessionledger" / "sessionledger.db"


def database_url(url: str | os.PathLike[str] | None = None) -> str:
    """The URL given, else $SESSIONLEDGER_DB, else the embedded SQLite file.

    A bare path (a string or a `pathlib.Path`) means a SQLite file; `postgresql://`
    URLs use psycopg 3.
    """
    if url is not None and not isinstance(url, str):
        return _sqlite_file(os.fspath(url))
    url = url or os.environ.get(DB_ENV) or str(default_database_path())
    if "://" not in url:
        return _sqlite_file(url)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_file(path: str) -> str:
    """The URL of a SQLite file at `path`, its directory made if missing."""
    resolved = Path(path).expanduser().resolve()
    resolved.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{resolved}"
