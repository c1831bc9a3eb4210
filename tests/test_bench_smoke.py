"""The benchmark runs end to end in its tiny profile, so its code cannot rot.

Only that it runs and reports every scenario: nothing here looks at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_bench_runs_every_scenario_and_prints_its_table(tmp_path: Path) -> None:
    report = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench", "--smoke", "--dir", str(tmp_path / "work")]
    done = subprocess.run(
        [*command, "--json", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio" in done.stdout and "target" in done.stdout
    results = json.loads(report.read_text())
    names = " | ".join(r["scenario"] for r in results)
    for scenario in (
        "append 1 event/call",
        "ingest 100 events/call",
        "ingest 1000 events/call",
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


def test_the_floor_replays_a_commands_sql_and_names_the_pages_it_writes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.floor", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "its SQL replayed raw" in done.stdout
    # Every command writes the event and the tracking row: the pages are attributed.
    assert "sessionledger_events" in done.stdout and "sessionledger_tracking" in done.stdout


def test_the_profile_measures_the_write_path_per_event() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.profile", "batch"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "batch: " in done.stdout and "µs CPU per event" in done.stdout
