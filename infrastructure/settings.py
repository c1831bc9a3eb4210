"""Where the store lives and how it behaves, from arguments or the environment."""

from __future__ import annotations

import os
from pathlib import Path

DB_ENV = "SESSIONLEDGER_DB"
SNAPSHOT_INTERVAL = 100  # events per aggregate between snapshots
AGGREGATE_CACHE_SIZE = 10_000
BUSY_TIMEOUT_SECONDS = 30.0


def default_database_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "sessionledger" / "sessionledger.db"


def database_url(url: str | None = None) -> str:
    """The URL given, else $SESSIONLEDGER_DB, else the embedded SQLite file.

    A bare path means a SQLite file; `postgresql://` URLs use psycopg 3.
    """
    url = url or os.environ.get(DB_ENV) or str(default_database_path())
    if "://" not in url:
        path = Path(url).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
