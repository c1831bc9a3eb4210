"""Child processes of the bench: the HTTP server, and a rebuild whose peak RSS is its own.

python -m bench.child serve URL PORT
python -m bench.child rebuild URL      -> prints {"seconds", "events", "peakRssMb"}
"""

from __future__ import annotations

import json
import os
import sys
import time


def peak_rss_mb() -> float:
    """VmHWM: this process's peak resident set, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(url: str, port: int) -> None:
    from infrastructure.config import ServerSettings
    from infrastructure.ledger import Ledger
    from infrastructure.server import serve

    serve(
        Ledger.open(url),
        host="127.0.0.1",
        port=port,
        settings=ServerSettings(),
        log_level="warning",
    )


def rebuild(url: str) -> None:
    from infrastructure.ledger import Ledger

    with Ledger.open(url) as ledger:
        before = peak_rss_mb()
        started = time.perf_counter()
        events = ledger.rebuild()
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {"seconds": seconds, "events": events, "peakRssMb": peak_rss_mb(), "openRssMb": before}
        )
    )


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    os.environ.pop("SESSIONLEDGER_READ_TOKENS", None)
    os.environ.pop("SESSIONLEDGER_ADMIN_TOKENS", None)
    if command == "serve":
        serve(args[0], int(args[1]))
    elif command == "rebuild":
        rebuild(args[0])
    else:
        raise SystemExit(f"unknown command {command!r}")
