"""Child processes of the bench: the HTTP server, and a rebuild whose peak RSS is its own
(its worker processes included).

python -m bench.child serve URL PORT
python -m bench.child rebuild URL      -> prints {"seconds", "events", "peakRssMb", ...}
    (peakRssMb: the rebuild process and its worker processes together)
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
    from sessionledger.infrastructure.config import ServerSettings
    from sessionledger.infrastructure.ledger import Ledger
    from sessionledger.infrastructure.server import serve

    serve(
        Ledger.open(url),
        host="127.0.0.1",
        port=port,
        settings=ServerSettings(),
        log_level="warning",
    )


def rebuild(url: str) -> None:
    import resource

    from sessionledger.infrastructure.ledger import Ledger
    from sessionledger.infrastructure.maintenance import partition

    with Ledger.open(url) as ledger:
        before = peak_rss_mb()
        started = time.perf_counter()
        events = ledger.rebuild()
        seconds = time.perf_counter() - started
    # The rebuild's worker processes (infrastructure/maintenance/partition.py), if it started any:
    # the largest one's peak, counted once per worker (an upper bound of their sum).
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    workers = partition.default_workers() - 1 if workers_peak else 0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "events": events,
                "peakRssMb": peak_rss_mb() + workers * workers_peak,
                "openRssMb": before,
                "workers": workers,
                "workerPeakRssMb": workers_peak,
            }
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
