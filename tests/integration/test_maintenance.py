"""Maintenance as events (a field failure of docs/invariants.md: pruning a running session):
recover closes stale runs as `interrupted`, prune archives old generations that are not
current and not running, bindings check drops bindings whose transcript is gone. Each
is an event in the log, so replay = live and verify hold afterwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sessionledger.domain.events import BindingDropped, GenerationPruned, RunEnded
from sessionledger.infrastructure.cli import app as cli
from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.http import create_app
from sessionledger.infrastructure.ledger import Ledger
from tests.helpers import assert_replay_equals_live, reported

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
IDLE = "agent:main:telegram:direct:1"  # an old generation, finished, then reset
BUSY = "agent:main:telegram:direct:2"  # an old generation still running, then reset
LIVE = "agent:main:telegram:direct:3"  # a fresh run in the current generation


def event(kind: str, key: str, sid: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return reported(kind, key, sid, event_id, fields.pop("at", T0), **fields)


def entry(key: str, sid: str, n: int) -> dict[str, Any]:
    body = {"id": f"{sid}-m{n}", "role": "assistant", "content": f"answer {n}", "timestamp": T0}
    return event("transcript.appended", key, sid, f"{sid}-t{n}", entry=body)


def scene(ledger: Ledger, now: datetime) -> dict[str, str]:
    """IDLE: run done, 3 entries, reset. BUSY: run never ended, reset. LIVE: a run started
    a minute before `now`."""
    ids: dict[str, str] = {}
    for key in (IDLE, BUSY, LIVE):
        ids[key] = sid = ledger.resolve(key, at=T0).session.session_id
        ledger.record(
            [event("run.started", key, sid, f"{sid}-s", runId=f"{key}-r", trigger="user")]
        )
    ledger.record([entry(IDLE, ids[IDLE], n) for n in range(3)])
    ledger.record([event("run.ended", IDLE, ids[IDLE], "end", runId=f"{IDLE}-r", outcome="done")])
    ledger.reset(IDLE, at=T0)
    ledger.reset(BUSY, at=T0)
    fresh = now - timedelta(minutes=1)
    sid = ledger.session(LIVE).session_id
    ledger.record(
        [event("run.started", LIVE, sid, "fresh", runId="fresh-run", trigger="user", at=fresh)]
    )
    return ids


@pytest.fixture
def later(database_url: str) -> Any:
    """A ledger whose clock is 60 days ahead of the store's recordedAt stamps."""
    now = datetime.now(UTC) + timedelta(days=60)
    with Ledger.open(database_url, clock=lambda: now) as opened:
        yield opened, now


# -- recover ----------------------------------------------------------------------------------


def test_recover_closes_stale_runs_as_interrupted_by_system(later: Any) -> None:
    ledger, now = later
    ids = scene(ledger, now)
    report = ledger.recover(timedelta(minutes=30))
    closed = {r.run_id: r.outcome for r in report.runs}
    # BUSY's run lives in an archived generation: closed there (archived), never current.
    # IDLE's run ended before its reset: recover leaves it alone.
    assert closed == {f"{BUSY}-r": "archived", f"{LIVE}-r": "applied"}
    assert "fresh-run" not in closed  # running for a minute: its runner may well be alive
    assert ledger.run("fresh-run").status == "running"
    assert ledger.session(LIVE).status == "running"
    run = ledger.run(f"{LIVE}-r")
    assert (run.status, run.ended_at) == ("interrupted", now)
    assert run.stop_reason.startswith("stale: running since") and "30m" in run.stop_reason
    assert ledger.run(f"{BUSY}-r").status == "interrupted"
    assert ledger.generation(ids[BUSY]).status == "interrupted"
    ends = [e for _, e in ledger.log() if isinstance(e, RunEnded) and e.writer == "system"]
    assert {e.run_id for e in ends} == {f"{BUSY}-r", f"{LIVE}-r"}
    assert all(e.outcome == "interrupted" for e in ends)
    # Audit shows the recovery as an event of its own.
    assert ledger.recover(timedelta(minutes=30)).runs == []
    assert_replay_equals_live(ledger)
    assert ledger.verify().ok


# -- prune -------------------------------------------------------------------------------------


def test_prune_archives_old_idle_generations_and_never_a_running_one(
    later: Any, tmp_path: Path
) -> None:
    ledger, now = later
    ids = scene(ledger, now)
    currents = {k: ledger.session(k).session_id for k in (IDLE, BUSY, LIVE)}
    report = ledger.prune(timedelta(days=30), export_dir=str(tmp_path / "export"))
    assert [(g.session_id, g.pruned, g.entries) for g in report.generations] == [
        (ids[IDLE], True, 3)
    ]
    # BUSY's old generation still has a running run; current generations are never pruned.
    assert ledger.generation(ids[BUSY]).pruned_at is None
    assert all(ledger.generation(s).pruned_at is None for s in currents.values())
    assert ledger.session(LIVE).status == "running"

    pruned = ledger.generation(ids[IDLE])
    assert pruned.pruned_at is not None
    assert (pruned.entry_count, pruned.state) == (3, "archived")
    assert ledger.transcript(IDLE, session_id=ids[IDLE]) == []
    lines = [
        json.loads(line) for line in Path(report.generations[0].export).read_text().splitlines()
    ]
    assert [line["seq"] for line in lines] == [1, 2, 3]
    assert lines[-1]["entryHash"] == pruned.head_hash
    (seal,) = [e for _, e in ledger.log() if isinstance(e, GenerationPruned)]
    assert (seal.entry_count, seal.head_hash, seal.writer) == (3, pruned.head_hash, "system")

    # Nothing more lands on a pruned generation: the aggregate no longer holds its entries.
    late = ledger.record([entry(IDLE, ids[IDLE], 9)])
    assert late[0].outcome == "rejected" and "pruned" in late[0].reason
    assert ledger.prune(timedelta(days=30)).generations == []

    assert_replay_equals_live(ledger)
    report_after = ledger.verify()
    assert report_after.ok, report_after.mismatches
    ledger.rebuild()
    assert_replay_equals_live(ledger)


def test_prune_survives_a_cold_load_and_recover_then_prune(later: Any, database_url: str) -> None:
    ledger, now = later
    ids = scene(ledger, now)
    ledger.recover(timedelta(minutes=30))  # BUSY's old run closes: now it may go
    report = ledger.prune(timedelta(days=30))
    assert {g.session_id for g in report.generations if g.pruned} == {ids[IDLE], ids[BUSY]}
    with Ledger.open(database_url) as cold:  # no cache: the aggregate replays the prune
        conversation = cold.store.database.write(lambda _: cold.store.app.conversation(IDLE))
        assert conversation is not None
        generation = conversation.generations[ids[IDLE]]
        assert generation.pruned and generation.entries == {}
        assert cold.record([entry(IDLE, ids[IDLE], 7)])[0].outcome == "rejected"
    assert_replay_equals_live(ledger)


# -- bindings check ------------------------------------------------------------------------------


def test_bindings_check_finds_and_drops_dead_bindings(ledger: Ledger, tmp_path: Path) -> None:
    for key in (IDLE, BUSY):
        ledger.resolve(key, at=T0)
    ledger.set_binding(IDLE, "claude", "alive-1")
    ledger.set_binding(BUSY, "claude", "gone-2")
    ledger.set_binding(BUSY, "codex", "../escape")
    (tmp_path / "alive-1.jsonl").write_text("{}\n")
    (tmp_path.parent / "escape.jsonl").write_text("{}\n")

    report = ledger.check_bindings(str(tmp_path))
    assert {(b.session_key, b.provider) for b in report.dead} == {(BUSY, "claude"), (BUSY, "codex")}
    assert ledger.session(BUSY).bindings == {"claude": "gone-2", "codex": "../escape"}

    fixed = ledger.check_bindings(str(tmp_path), fix=True)
    assert all(b.dropped for b in fixed.dead)
    assert ledger.session(BUSY).bindings == {}
    assert ledger.session(IDLE).bindings == {"claude": "alive-1"}
    drops = [e for _, e in ledger.log() if isinstance(e, BindingDropped)]
    assert {(e.provider, e.reason, e.writer) for e in drops} == {
        ("claude", "missing-transcript", "system"),
        ("codex", "missing-transcript", "system"),
    }
    assert ledger.check_bindings(str(tmp_path)).dead == []
    assert_replay_equals_live(ledger)


# -- CLI and HTTP --------------------------------------------------------------------------------


def test_cli_recover_prune_and_bindings_check(sqlite_url: str, tmp_path: Path) -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(IDLE, at=past).session.session_id
        ledger.record([event("run.started", IDLE, sid, "s", runId="old", trigger="user", at=past)])
        ledger.record([entry(IDLE, sid, 1)])
        ledger.set_binding(IDLE, "claude", "gone")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, [*args, "--db", sqlite_url])
        assert result.exit_code == code, result.output
        return result

    assert "1 stale runs closed" in run("recover", "--stale-after", "30m").output
    body = json.loads(run("recover", "--stale-after", "30m", "--json").stdout)
    assert body["closed"] == 0
    assert "dead bindings" in run("bindings", "check", "--dir", str(tmp_path), code=1).output
    body = json.loads(run("bindings", "check", "--dir", str(tmp_path), "--fix", "--json").stdout)
    assert body["dead"] == 1 and body["bindings"][0]["dropped"] is True
    with Ledger.open(sqlite_url) as ledger:
        ledger.reset(IDLE)
    import time

    time.sleep(1.1)
    out = tmp_path / "export"
    body = json.loads(run("prune", "--older-than", "1s", "--export", str(out), "--json").stdout)
    assert body["pruned"] == 1
    assert (out / f"{sid}.jsonl").read_text().count("\n") == 1
    assert "0 generations pruned" in run("prune", "--older-than", "1s").output
    assert "intact" in run("verify").output


def test_http_maintenance_is_admin_only(sqlite_url: str, tmp_path: Path) -> None:
    settings = ServerSettings(read_tokens=frozenset({"r"}), admin_tokens=frozenset({"a"}))
    read, admin = {"authorization": "Bearer r"}, {"authorization": "Bearer a"}
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(IDLE, at=T0).session.session_id
        ledger.record([event("run.started", IDLE, sid, "s", runId="old", trigger="user")])
        ledger.set_binding(IDLE, "claude", "gone")
        client = TestClient(create_app(ledger, settings))
        for path, body in (
            ("/v1/admin/recover", {"staleAfterMinutes": 30}),
            ("/v1/admin/prune", {"olderThanMinutes": 60}),
            ("/v1/admin/bindings/check", {"dir": str(tmp_path)}),
        ):
            assert client.post(path, json=body, headers=read).status_code == 403
        answer = client.post("/v1/admin/recover", json={"staleAfterMinutes": 30}, headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.json()["runs"][0]["outcome"] == "applied"
        answer = client.post("/v1/admin/prune", json={"olderThanMinutes": 60}, headers=admin)
        assert answer.status_code == 200 and answer.json()["generations"] == []
        check = {"dir": str(tmp_path), "fix": True}
        answer = client.post("/v1/admin/bindings/check", json=check, headers=admin)
        assert answer.json()["bindings"][0]["dropped"] is True
        missing = {"dir": str(tmp_path / "nope")}
        assert (
            client.post("/v1/admin/bindings/check", json=missing, headers=admin).status_code == 422
        )
        assert_replay_equals_live(ledger)
