"""The HTTP API as a real server process: uvicorn on a free loopback port, driven with httpx.

`start_server` runs `infrastructure.server.serve` in a child Python process and waits for
`/healthz` against a deadline. `RunningServer.client` gives an httpx client whose every
response is checked on the way in: no Python traceback in any body, and every error is the
documented JSON shape `{"error", "message", "details"}`.

Fixtures: `http_server` (module scope, once on a SQLite file and once on PostgreSQL, with a
read token and an admin token configured). Import them into a test module to use them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
READ_TOKEN = "read-token-e2e"
ADMIN_TOKEN = "admin-token-e2e"
START_DEADLINE_SECONDS = 60.0

# The child process serves the ledger with uvicorn; a short busy timeout makes a locked
# SQLite file answer 503 in about a second instead of 30.
_CHILD = """
import json, sys
from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.server import serve
config = json.loads(sys.argv[1])
options = {} if config["busyTimeout"] is None else {"busy_timeout": config["busyTimeout"]}
settings = ServerSettings(
    read_tokens=frozenset(config["readTokens"]), admin_tokens=frozenset(config["adminTokens"])
)
serve(Ledger.open(config["url"], **options), host="127.0.0.1", port=config["port"],
      settings=settings, log_level="warning")
"""

TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "site-packages")


class ServerDidNotStart(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_response(response: httpx.Response) -> None:
    """Every answer of the server: never a stack trace; errors in the documented shape."""
    response.read()
    body = response.text
    for marker in TRACEBACK_MARKERS:
        assert marker not in body, f"{response.request.url}: traceback in body: {body[:2000]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), body[:500]
        error = response.json()
        assert set(error) == {"error", "message", "details"}, error
        assert isinstance(error["error"], str) and error["error"], error
        assert isinstance(error["message"], str) and error["message"], error


@dataclass
class RunningServer:
    url: str
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    read_token: str | None = READ_TOKEN
    admin_token: str | None = ADMIN_TOKEN
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = "admin", *, timeout: float = 60.0) -> httpx.Client:
        """A client with the admin token ("admin"), the read token ("read"), none, or a literal."""
        headers = {}
        bearer = {"admin": self.admin_token, "read": self.read_token}.get(token or "", token)
        if token is not None and bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            event_hooks={"response": [check_response]},
        )
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start_server(
    database_url: str,
    log_dir: Path,
    *,
    read_tokens: tuple[str, ...] = (READ_TOKEN,),
    admin_tokens: tuple[str, ...] = (ADMIN_TOKEN,),
    busy_timeout: float | None = None,
    attempts: int = 3,
) -> RunningServer:
    """Start `serve` in a child process on a free port; return once /healthz answers 200."""
    last_error = ""
    for _ in range(attempts):
        port = free_port()
        log_path = log_dir / f"server-{port}-{uuid.uuid4().hex[:6]}.log"
        config = {
            "url": database_url,
            "port": port,
            "readTokens": list(read_tokens),
            "adminTokens": list(admin_tokens),
            "busyTimeout": busy_timeout,
        }
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("SESSIONLEDGER_READ_TOKENS", None)
        env.pop("SESSIONLEDGER_ADMIN_TOKENS", None)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(config)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = RunningServer(
            url=f"http://127.0.0.1:{port}",
            database_url=database_url,
            process=process,
            log_path=log_path,
            read_token=read_tokens[0] if read_tokens else None,
            admin_token=admin_tokens[0] if admin_tokens else None,
        )
        if _wait_healthy(server):
            return server
        server.stop()
        last_error = server.log()
        if "address already in use" not in last_error.lower():
            break  # not a port race: retrying will not help
    raise ServerDidNotStart(f"server did not become healthy:\n{last_error[-4000:]}")


def _wait_healthy(server: RunningServer) -> bool:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    with httpx.Client(base_url=server.url, timeout=2.0) as probe:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                if probe.get("/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


def sqlite_database(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'ledger.db'}"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def http_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server per backend for a whole test module; tests keep to their own keys."""
    base = tmp_path_factory.mktemp(f"http-{request.param}")
    if request.param == "sqlite":
        url = sqlite_database(base / "db")
    else:
        url = request.getfixturevalue("postgres_server").create_database()
    server = start_server(url, base)
    try:
        yield server
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-4000:]
