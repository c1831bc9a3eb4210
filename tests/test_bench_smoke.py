"""The benchmark runs end to end in its tiny profile, so its code cannot rot.

Only that it runs and reports every scenario: nothing here looks at a time.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*arguments: str, timeout: float = 120) -> str:
    """`python -m <arguments>` in the repository; its output, once it succeeded."""
    done = subprocess.run(
        [sys.executable, "-m", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def installed(module: str) -> bool:
    """Whether `module` (dotted: its parents too) can be imported here."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def test_the_bench_runs_every_scenario_and_prints_its_table(tmp_path: Path) -> None:
    report = tmp_path / "results.json"
    output = run(
        "bench", "--smoke", "--dir", str(tmp_path / "work"), "--json", str(report), timeout=300
    )
    assert "ratio" in output and "target" in output
    results = json.loads(report.read_text())
    names = " | ".join(r["scenario"] for r in results)
    for scenario in (
        "append 1 event/call",
        "ingest 100 events/call",
        "ingest 1000 events/call",
        "UUIDv4 eventIds",
        "command cost",
        "transcript",
        "audit",
        "read one row",
        "list 100",
        "status report",
        "rebuild",
        "HTTP 1 event/request",
        "HTTP 100 events/request",
    ):
        assert scenario in names, (scenario, names)
    for result in results:
        assert result["value"] > 0, result
    # The peers are an optional extra (.[bench]): measured when installed, else skipped
    # with a message, never a failure.
    peers = [
        store
        for module, store in (("agents", "OpenAI SQLiteSession"), ("google.adk", "ADK"))
        if installed(module)
    ]
    if peers:
        for store in ("sessionledger", *peers):
            assert f"peers: append, 1 conversation, {store}" in names, (store, names)
            assert "the best peer" in output
    else:
        assert "peers: skipped, no peer is installed" in output, output
        assert "peers:" not in names


def test_the_floor_replays_a_commands_sql_and_names_the_pages_it_writes() -> None:
    output = run("bench.floor", "20")
    assert "its SQL replayed raw" in output
    # Every command writes the event and the tracking row: the pages are attributed.
    assert "sessionledger_events" in output and "sessionledger_tracking" in output


def test_the_profile_measures_the_write_path_per_event() -> None:
    output = run("bench.profile", "batch")
    assert "batch: " in output and "µs CPU per event" in output and "raw sqlite3" in output


def test_the_profile_measures_the_ceiling_without_read_model_writes() -> None:
    output = run("bench.profile", "single", "--unprojected")
    assert "single: " in output and "raw sqlite3" in output and "ratio" in output
    assert "unprojected" in output


def test_the_ingest_floor_writes_a_store_that_verifies() -> None:
    # The hand-written path must write what the ledger writes, or its rate means nothing:
    # the tool verifies its store (chains and every read-model row) and exits non-zero
    # otherwise.
    output = run("bench.ingest_floor", "1")
    assert "by hand:" in output and "ledger / hand:" in output
    assert "the hand-written store verifies: 5,100 events, 50 chains" in output
