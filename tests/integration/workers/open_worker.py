"""Opens the ledger once all its siblings are ready ("go" on stdin), then resolves a key.

python -m tests.integration.workers.open_worker URL PROC
"""

from __future__ import annotations

import json
import sys
import traceback

from sessionledger.infrastructure.ledger import Ledger


def main() -> None:
    url, proc = sys.argv[1], sys.argv[2]
    print(json.dumps({"ready": proc}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    try:
        with Ledger.open(url) as ledger:
            resolved = ledger.resolve("agent:main:main", interaction="heartbeat")
            print(
                json.dumps({"opened": proc, "sessionId": resolved.session.session_id}), flush=True
            )
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}))


if __name__ == "__main__":
    main()
