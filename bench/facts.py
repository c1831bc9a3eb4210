"""Facts as a gateway reports them (camelCase dicts, the HTTP API's shape)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

_ids = itertools.count()


def event_id() -> str:
    """Ids that grow, as time-ordered ones (UUIDv7, ULID) do."""
    return f"b{next(_ids)}-{id(_ids):x}"


def random_event_id() -> str:
    """A UUIDv4, as many gateways send."""
    return str(uuid.uuid4())


class Chain:
    """One key's transcript: every append names the previous entry as its parent."""

    def __init__(
        self,
        key: str,
        session_id: str,
        at: datetime,
        prefix: str = "m",
        ids: Callable[[], str] = event_id,
    ) -> None:
        self.key = key
        self.ids = ids
        self.session_id = session_id
        self.at = at.isoformat()
        self.prefix = prefix
        self.count = 0
        self.run = 0

    def base(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {
            "type": type_,
            "eventId": self.ids(),
            "sessionKey": self.key,
            "sessionId": self.session_id,
            "occurredAt": self.at,
            "writer": "runner",
            **fields,
        }

    def append(self, content: str = "") -> dict[str, Any]:
        n = self.count
        self.count += 1
        entry = {
            "id": f"{self.prefix}{n}",
            "parentId": f"{self.prefix}{n - 1}" if n else None,
            "role": "assistant" if n % 2 else "user",
            "content": content or f"turn {n}: " + "lorem ipsum dolor sit amet " * 8,
            "timestamp": self.at,
        }
        return self.base("transcript.appended", entry=entry)

    def start(self) -> dict[str, Any]:
        self.run += 1
        return self.base(
            "run.started",
            runId=f"{self.session_id}-r{self.run}",
            trigger="user",
            model="claude-sonnet",
            provider="anthropic",
        )

    def end(self, outcome: str = "done") -> dict[str, Any]:
        run_id = f"{self.session_id}-r{self.run}"
        if outcome == "error":
            return self.base("run.errored", runId=run_id, error="timeout", errorKind="timeout")
        return self.base(
            "run.ended",
            runId=run_id,
            outcome=outcome,
            usage={"input": 1200, "output": 80, "cacheRead": 10, "cacheWrite": 5},
        )

    def conversation(self, index: int) -> list[dict[str, Any]]:
        """Nine facts of an ordinary exchange: two runs, five transcript entries; every
        twentieth key's second run is still running, every seventh's first one failed."""
        facts = [self.start(), self.append(), self.append()]
        facts.append(self.end("error" if index % 7 == 0 else "done"))
        facts += [self.start(), self.append(), self.append(), self.append()]
        if index % 20 != 0:
            facts.append(self.end())
        else:
            facts.append(self.append())
        return facts
