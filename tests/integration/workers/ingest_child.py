"""Child process of the crash test (docs/invariants.md, rule 5): ingests until it is killed.

    python -m tests.integration.workers.ingest_child URL ROUND SEED

It opens the ledger, then records small mixed batches (run starts/ends/errors,
transcript appends, whole turns) on a few keys and resets a key now and then. Every
line it prints is one JSON object, flushed at once:

- {"opening": ROUND} just before `Ledger.open` (which may create and migrate the store);
- {"send": [eventIds]} just before `record()` is called with that batch;
- {"ack": [{"fact", "outcome", "position"}, ...]} only after `record()` returned;
- {"reset": key, "from": sid, "to": sid} only after `reset()` returned.

The parent kills it with SIGKILL at a random moment and checks that whatever was
acknowledged survived and whatever was only sent is either wholly there or absent.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from typing import Any

from sessionledger.domain.errors import UnknownSession
from sessionledger.infrastructure.ledger import Ledger, RecordResult

KEYS = (
    "agent:main:telegram:direct:4242",
    "agent:ops:slack:channel:c01",
    "cron:nightly-digest",
)
WRITERS = ("runner", "heartbeat", "cron", "ingress")
MAX_BATCHES = 5000  # a safety net: the parent kills us long before


@dataclass
class KeyState:
    session_id: str
    last_entry: str | None
    open_runs: list[tuple[str, str]] = field(default_factory=list)  # (runId, sessionId)


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Ingest:
    def __init__(self, ledger: Ledger, prefix: str, rng: random.Random) -> None:
        self.ledger = ledger
        self.prefix = prefix
        self.rng = rng
        self.counter = 0
        self.state: dict[str, KeyState] = {}

    def new_id(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}-{kind}{self.counter}"

    def load(self, key: str) -> KeyState:
        try:
            session_id = self.ledger.session(key).session_id
        except UnknownSession:
            session_id = self.ledger.resolve(key, interaction="user").session.session_id
        entries = self.ledger.transcript(key, session_id=session_id)
        return KeyState(session_id, entries[-1].entry_id if entries else None)

    def fact(self, kind: str, key: str, session_id: str, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "eventId": self.new_id("e"),
            "sessionKey": key,
            "sessionId": session_id,
            "occurredAt": "2026-11-21T10:00:00Z",
            "writer": self.rng.choice(WRITERS),
            **fields,
        }

    def append(self, key: str, role: str, parent: str | None) -> dict[str, Any]:
        state = self.state[key]
        entry_id = self.new_id("m")
        return self.fact(
            "transcript.appended",
            key,
            state.session_id,
            entry={
                "id": entry_id,
                "parentId": parent,
                "role": role,
                "content": f"{role} says {entry_id} " + "x" * self.rng.randrange(0, 400),
                "timestamp": "2026-11-21T10:00:00Z",
            },
        )

    def batch(self, key: str) -> list[dict[str, Any]]:
        state = self.state[key]
        sid = state.session_id
        choice = self.rng.random()
        if choice < 0.35:  # a whole turn, atomically
            run = self.new_id("r")
            user = self.append(key, "user", state.last_entry)
            reply = self.append(key, "assistant", user["entry"]["id"])
            return [
                self.fact("run.started", key, sid, runId=run, trigger="user", model="m1"),
                user,
                reply,
                self.fact(
                    "run.ended",
                    key,
                    sid,
                    runId=run,
                    outcome="done",
                    usage={"input": 10, "output": 5},
                ),
            ]
        if choice < 0.55:
            trigger = self.rng.choice(["heartbeat", "cron", "system"])
            return [self.fact("run.started", key, sid, runId=self.new_id("r"), trigger=trigger)]
        if choice < 0.75 and state.open_runs:
            run, run_sid = state.open_runs[0]
            if self.rng.random() < 0.7:
                return [self.fact("run.ended", key, run_sid, runId=run, outcome="done")]
            return [self.fact("run.errored", key, run_sid, runId=run, error="boom")]
        facts = []
        parent = state.last_entry
        for _ in range(self.rng.randrange(1, 4)):
            facts.append(self.append(key, self.rng.choice(["user", "assistant"]), parent))
            parent = facts[-1]["entry"]["id"]
        return facts

    def settle(self, key: str, facts: list[dict[str, Any]], results: list[RecordResult]) -> None:
        state = self.state[key]
        for fact, result in zip(facts, results, strict=True):
            if result.outcome == "rejected":
                raise AssertionError(f"{fact['eventId']} rejected: {result.reason}")
            if fact["type"] == "run.started":
                state.open_runs.append((fact["runId"], fact["sessionId"]))
            elif fact["type"] in ("run.ended", "run.errored"):
                state.open_runs = [r for r in state.open_runs if r[0] != fact["runId"]]
            elif fact["type"] == "transcript.appended" and fact["sessionId"] == state.session_id:
                state.last_entry = fact["entry"]["id"]

    def run(self) -> None:
        for key in KEYS:
            self.state[key] = self.load(key)
        for _ in range(MAX_BATCHES):
            key = self.rng.choice(KEYS)
            if self.rng.random() < 0.06:
                result = self.ledger.reset(key, reason="reset", writer="admin")
                emit({"reset": key, "from": result.previous_session_id, "to": result.session_id})
                self.state[key].session_id = result.session_id
                self.state[key].last_entry = None
                continue
            facts = self.batch(key)
            emit({"send": [f["eventId"] for f in facts]})
            results = self.ledger.record(facts)
            self.settle(key, facts, results)
            emit(
                {
                    "ack": [
                        {"fact": f, "outcome": r.outcome, "position": r.position}
                        for f, r in zip(facts, results, strict=True)
                    ]
                }
            )


def main() -> None:
    url, prefix, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    emit({"opening": prefix})
    ledger = Ledger.open(url)
    emit({"ready": prefix})
    Ingest(ledger, prefix, random.Random(seed)).run()
    ledger.close()


if __name__ == "__main__":
    main()
