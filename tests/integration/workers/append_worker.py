"""Worker of the concurrency test (invariant 6): threads of co-tenant writers, one session.

    python -m tests.integration.workers.append_worker URL KEY SESSION_ID PROC THREADS APPENDS [STOP]

Opens the ledger, prints {"ready": PROC}, waits for "go" on stdin, then runs THREADS
writers (heartbeat, cron, ingress, runner in turn) that each append APPENDS
transcript entries to the same session, one batch per append, chaining each entry to
that writer's previous one. With STOP = "archived", a writer stops early once two of
its appends came back archived (the session was reset under it). Every answer is
printed as one JSON line; an exception is printed as {"error": ...} and ends that writer.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from typing import Any

from sessionledger.infrastructure.ledger import Ledger

WRITERS = ("heartbeat", "cron", "ingress", "runner")

_out = threading.Lock()


def emit(line: dict[str, Any]) -> None:
    with _out:
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def writer(
    ledger: Ledger,
    key: str,
    session_id: str,
    name: str,
    kind: str,
    appends: int,
    stop_when_archived: bool,
    start: Any,
) -> None:
    start.wait()
    parent = None
    archived = 0
    for n in range(appends):
        entry_id = f"{name}-n{n}"
        fact = {
            "type": "transcript.appended",
            "eventId": f"{name}-e{n}",
            "sessionKey": key,
            "sessionId": session_id,
            "occurredAt": "2026-11-21T10:00:00Z",
            "writer": kind,
            "entry": {
                "id": entry_id,
                "parentId": parent,
                "role": "user" if kind == "ingress" else "assistant",
                "content": {"writer": name, "seq": n},
                "timestamp": "2026-11-21T10:00:00Z",
            },
        }
        try:
            (result,) = ledger.record([fact])
        except Exception as e:
            emit(
                {
                    "error": f"{type(e).__name__}: {e}",
                    "w": name,
                    "n": n,
                    "trace": traceback.format_exc(),
                }
            )
            return
        emit(
            {
                "w": name,
                "n": n,
                "outcome": result.outcome,
                "position": result.position,
                "sessionId": result.session_id,
                "currentSessionId": result.current_session_id,
                "reason": result.reason,
            }
        )
        parent = entry_id
        archived += result.outcome == "archived"
        if stop_when_archived and archived >= 2:
            return


def main() -> None:
    url, key, session_id = sys.argv[1:4]
    proc, threads, appends = (int(a) for a in sys.argv[4:7])
    stop_when_archived = sys.argv[7:] == ["archived"]
    ledger = Ledger.open(url)
    emit({"ready": proc})
    if sys.stdin.readline().strip() != "go":
        return
    start = threading.Barrier(threads)
    workers = [
        threading.Thread(
            target=writer,
            args=(
                ledger,
                key,
                session_id,
                f"p{proc}t{t}",
                WRITERS[t % 4],
                appends,
                stop_when_archived,
                start,
            ),
        )
        for t in range(threads)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    ledger.close()
    emit({"done": proc})


if __name__ == "__main__":
    main()
