"""A worker subprocess whose JSON-lines output is collected on a reader thread.

Tests wait on conditions over the collected lines (never fixed sleeps) and can
SIGKILL the worker at any moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
DEADLINE = 60.0


class Worker:
    def __init__(self, module: str, *args: str, stdin: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"tests.integration.workers.{module}", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self._stderr = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.error_reader = threading.Thread(target=self._read_errors, daemon=True)
        self.error_reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            if not raw.endswith(b"\n"):
                break  # a line cut short by a kill was never a whole acknowledgement
            with self.changed:
                self.lines.append(json.loads(raw))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        self._stderr = self.process.stderr.read()

    def count(self, tag: str) -> int:
        with self.changed:
            return sum(1 for line in self.lines if tag in line)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                if not self.reader.is_alive():
                    self.process.wait(timeout)
                    self.error_reader.join(timeout)
                    raise AssertionError(f"worker exited before {what}:\n{self.stderr()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self.changed.wait(min(remaining, 0.5))

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = DEADLINE) -> int:
        code = self.process.wait(timeout)
        self.reader.join(timeout)
        self.error_reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.finish()

    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")[-4000:]
