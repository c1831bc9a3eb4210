"""Runs the HTTP API with uvicorn: loopback by default, never open to a network unauthenticated."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.http import create_app
from sessionledger.infrastructure.ledger import Ledger


class UnsafeBind(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    ledger: Ledger,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    settings: ServerSettings | None = None,
    log_level: str = "info",
) -> None:
    settings = settings or ServerSettings.from_environment()
    if not is_loopback(host) and not settings.auth_enabled:
        raise UnsafeBind(
            f"refusing to bind {host}: a non-loopback address needs bearer tokens "
            "(SESSIONLEDGER_READ_TOKENS / SESSIONLEDGER_ADMIN_TOKENS)"
        )
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        create_app(ledger, settings),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
