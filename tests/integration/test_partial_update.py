"""Row UPDATEs assign only the columns whose value changed (projections/projector.py
`update_changed`): SQLite rewrites every index with an assigned column, changed or not.

An `AFTER UPDATE OF <columns>` trigger fires exactly when an UPDATE assigns one of the
columns, so it shows what a statement assigned; the rows read back show what it stored.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, create_engine, text

from sessionledger.infrastructure.ledger import Ledger
from sessionledger.projections.projector import insert_rows, select_in, update_changed
from sessionledger.projections.rows import GenerationRow
from sessionledger.projections.tables import TABLES
from tests.helpers import assert_replay_equals_live, user_turn

KEY = "agent:main:slack:direct:7"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
# The generation row's indexed columns a transcript append leaves as they were.
UNCHANGED_INDEXED = ("session_key", "status", "state", "resumable")


def append(session_id: str, n: int) -> dict[str, object]:
    return user_turn(
        KEY,
        session_id,
        n,
        parent=None if n == 1 else n - 1,
        occurred_at=T0,
        timestamp=T0 + timedelta(seconds=n),
    )


def watch(connection: Connection, name: str, columns: tuple[str, ...]) -> None:
    """Log each generation UPDATE that assigns any of `columns` into `assigned`."""
    connection.execute(
        text("CREATE TABLE IF NOT EXISTS assigned (watch TEXT, session_id TEXT, entries INT)")
    )
    connection.execute(
        text(
            f"CREATE TRIGGER {name} AFTER UPDATE OF {', '.join(columns)} ON ledger_generations"
            f" BEGIN INSERT INTO assigned VALUES ('{name}', NEW.session_id, NEW.entry_count);"
            " END"
        )
    )


def assigned(connection: Connection) -> list[tuple[str, str, int]]:
    rows = connection.execute(text("SELECT watch, session_id, entries FROM assigned"))
    return [(w, s, e) for w, s, e in rows]


def test_a_transcript_append_assigns_only_the_changed_generation_columns(
    sqlite_url: str,
) -> None:
    with Ledger.open(sqlite_url) as ledger:
        sid = ledger.resolve(KEY, at=T0).session.session_id
        ledger.record([append(sid, 1)])  # the row is cached, as a warm command finds it
        engine = create_engine(sqlite_url)
        with engine.begin() as connection:
            watch(connection, "indexed", UNCHANGED_INDEXED)
            watch(connection, "changed", ("updated_at", "entry_count"))
        ledger.record([append(sid, 2)])
        ledger.record([append(sid, 3), append(sid, 4)])
        with engine.connect() as connection:
            assert assigned(connection) == [("changed", sid, 2), ("changed", sid, 4)]
        engine.dispose()
        generation = ledger.generation(sid)
        assert generation is not None and generation.entry_count == 4
        assert_replay_equals_live(ledger)


def _generation(connection: Connection, session_id: str) -> GenerationRow:
    (row,) = select_in(connection, TABLES.generations, "session_id", [session_id], GenerationRow)
    return row


def test_only_a_row_whose_stored_version_is_known_is_updated_in_part() -> None:
    engine = create_engine("sqlite://")
    TABLES.metadata.create_all(engine)
    stored = GenerationRow(
        session_id="g1",
        session_key=KEY,
        previous_session_id=None,
        next_session_id=None,
        open_reason="new",
        state="current",
        opened_at=T0,
        opened_position=1,
        archived_at=None,
        archive_reason=None,
        status="new",
        active_run_ids=(),
        last_run_id=None,
        last_error=None,
        started_at=None,
        ended_at=None,
        runtime_ms=None,
        input_tokens=0,
        output_tokens=0,
        cache_read_tokens=0,
        cache_write_tokens=0,
        model=None,
        provider=None,
        last_interaction_at=None,
        entry_count=0,
        resumable=False,
        head_hash="0" * 64,
        bindings={"a": "b"},
        overrides={},
        late_events=0,
        updated_at=T0,
        position=1,
    )
    with engine.begin() as connection:
        insert_rows(connection, TABLES.generations, [stored])
        watch(connection, "indexed", UNCHANGED_INDEXED)
        watch(connection, "bindings", ("bindings",))
        watch(connection, "any", ("position",))
        # Known stored version: only what is not the same object is assigned.
        first = dataclasses.replace(stored, entry_count=1, updated_at=T0 + timedelta(1), position=2)
        update_changed(connection, TABLES.generations, [first], {"g1": stored})
        assert _generation(connection, "g1") == first
        assert assigned(connection) == [("any", "g1", 1)]
        # An equal value that is another object is merely written again.
        second = dataclasses.replace(first, bindings={"a": "b"}, entry_count=2)
        update_changed(connection, TABLES.generations, [second], {"g1": first})
        assert _generation(connection, "g1") == second
        assert assigned(connection)[1:] == [("bindings", "g1", 2)]
        # Nothing changed: no statement at all.
        update_changed(connection, TABLES.generations, [second], {"g1": second})
        assert len(assigned(connection)) == 2
        # No stored version known (the rebuild's shadow, a catch-up's loaded rows are
        # known; a row from elsewhere is not): every column is assigned.
        third = dataclasses.replace(second, status="running", position=3)
        update_changed(connection, TABLES.generations, [third], None)
        update_changed(connection, TABLES.generations, [third], {})
        assert _generation(connection, "g1") == third
        watches = sorted(w for w, _, _ in assigned(connection)[2:])
        assert watches == ["any", "any", "bindings", "bindings", "indexed", "indexed"]
    engine.dispose()
