"""SQLite's WAL copied back into the database file on a thread of its own.

SQLite checkpoints at the end of the commit that takes the WAL past
`wal_autocheckpoint` pages (1,000 by default), after releasing its own lock: that
commit's caller waits while the pages are copied into the database file and the file
is synced, and this process's other writers wait on its writer lock. Sustained
ingest paid about a tenth of its time for it. Here each
commit wakes a thread that checkpoints PASSIVE (it never waits for, nor blocks, readers
or writers) on a connection of its own, while the copying and syncing run outside the
GIL, on the machine's other core. The writers' own connections still checkpoint past
BACKSTOP_PAGES, so the WAL stays bounded should this thread fall behind or fail.

A checkpoint never decides what is durable: a commit is synced to the WAL before it
is acknowledged (synchronous=FULL), and SQLite replays the WAL on open after a crash.

The writers' own checkpoints had left gaps in their stream of transactions, in which
another process waiting for the writer lock in SQLite's busy handler (sleeps of up to
100 ms) got it. Without them a reset from another process under heavy load waited up
to 1.75 s, until writers asked for the lock every millisecond instead
(`database._begin_immediate`): tens of milliseconds.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("sessionledger.checkpointer")

# The writers' wal_autocheckpoint: four times SQLite's default, about 16 MB of WAL. Low
# enough that a stream of small commits, which rarely leaves a moment when every frame
# is in the file, still restarts the WAL from its start regularly (the backstop's
# checkpoint then finds most frames copied already); 10,000 measured no better for
# single appends, 2,000 gave back some of ingest's gain.
BACKSTOP_PAGES = 4_000
# Between two checkpoints, at least: under a stream of single-event commits one
# checkpoint copies the pages of many (each commit rewrites the same few hot pages),
# and each checkpoint syncs the database file once. 0.02 s cost single appends ~5%.
PAUSE_SECONDS = 0.1


class Checkpoint(NamedTuple):
    """`PRAGMA wal_checkpoint`'s answer: whether it met a lock, the WAL's frames, and
    how many of them are in the database file now."""

    busy: int
    log_frames: int
    checkpointed_frames: int


class Checkpointer:
    """One SQLite file's checkpoints, run after commits by a daemon thread."""

    def __init__(self, path: str, *, pause: float = PAUSE_SECONDS) -> None:
        self.path = path
        self.pause = pause
        self.last: Checkpoint | None = None  # the latest checkpoint's answer
        self._committed = threading.Event()
        self._closed = threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None  # started by the first commit
        self._starting = threading.Lock()

    def committed(self) -> None:
        """A write transaction committed: checkpoint soon."""
        if self._thread is None:
            self._start()
        self._committed.set()

    def _start(self) -> None:
        with self._starting:
            if self._thread is None and not self._closed.is_set():
                name = f"sessionledger-checkpointer:{Path(self.path).name}"
                thread = threading.Thread(target=self._run, name=name, daemon=True)
                thread.start()
                self._thread = thread

    def wait_for(self, frames_in_file: int, timeout: float) -> bool:
        """Until a checkpoint has `frames_in_file` WAL frames in the database file (for
        tests and tools); whether it happened within `timeout` seconds."""
        with self._done:
            return self._done.wait_for(
                lambda: self.last is not None and self.last.checkpointed_frames >= frames_in_file,
                timeout,
            )

    def close(self) -> None:
        with self._starting:
            self._closed.set()
        self._committed.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                self._committed.wait()
                if self._closed.is_set():
                    return
                self._committed.clear()
                if connection is None:
                    # mode=rw: a file removed under the store is never made anew here.
                    connection = sqlite3.connect(
                        f"file:{self.path}?mode=rw", uri=True, timeout=0, isolation_level=None
                    )
                self._checkpoint(connection)
                if self._closed.wait(self.pause):
                    return
        except sqlite3.Error as e:
            # The writers' backstop checkpoints from here on.
            log.warning("checkpoints of %s stopped: %s", self.path, e)
        finally:
            if connection is not None:
                connection.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.OperationalError as e:
            # Another process's checkpoint or a locked file: the next commit tries again.
            log.debug("checkpoint of %s skipped: %s", self.path, e)
            return
        with self._done:
            self.last = Checkpoint(*row)
            self._done.notify_all()
