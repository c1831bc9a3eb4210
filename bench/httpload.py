"""A lean HTTP/1.1 load generator: one keep-alive connection per client, requests
pre-encoded, responses read by Content-Length. Python's own clients would spend more
CPU than the server on this 2-core machine and measure themselves instead."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(url: str, log_path: Path, deadline: float = 60.0) -> Iterator[int]:
    """`infrastructure.server.serve` in a child process on a free loopback port."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.child", "serve", url, str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        until = time.monotonic() + deadline
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > until:
                raise RuntimeError(f"server did not start:\n{log_path.read_text()[-3000:]}")
            try:
                status, _ = asyncio.run(_get(port, "/healthz"))
                if status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def post(path: str, body: object) -> bytes:
    data = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return await _read_response(reader)
    finally:
        writer.close()


async def _client(port: int, requests: Sequence[bytes], time_limit: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    until = time.monotonic() + time_limit
    try:
        for request in requests:
            writer.write(request)
            status, body = await _read_response(reader)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:500]!r}")
            done += 1
            if time.monotonic() > until:
                break
    finally:
        writer.close()
    return done


def load(port: int, per_client: Sequence[Sequence[bytes]], time_limit: float) -> tuple[int, float]:
    """Run every client's requests concurrently; (requests answered 200, seconds)."""

    async def run() -> tuple[int, float]:
        started = time.perf_counter()
        counts = await asyncio.gather(*(_client(port, r, time_limit) for r in per_client))
        return sum(counts), time.perf_counter() - started

    return asyncio.run(run())
