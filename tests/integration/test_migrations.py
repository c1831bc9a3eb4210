"""Alembic owns every table: upgrades from nothing and from an older revision,
refusals for schemas this code does not know, and no drift between the SQLAlchemy
table definitions the code uses and the tables the migrations create."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, create_engine, create_mock_engine, event, inspect, text
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex
from sqlalchemy.types import TypeEngine
from typer.testing import CliRunner

from sessionledger.domain.errors import SchemaMismatch
from sessionledger.infrastructure.cli import app as cli
from sessionledger.infrastructure.ledger import Ledger
from sessionledger.infrastructure.schema import (
    current_revision,
    ensure_schema,
    head_revision,
    upgrade,
)
from sessionledger.projections.tables import EVENTS_TABLE, SNAPSHOTS_TABLE, TABLES, TRACKING_TABLE

KEY = "agent:main:telegram:direct:4242"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
FIRST = "0001"
EVENT_STORE_TABLES = {EVENTS_TABLE, SNAPSHOTS_TABLE, TRACKING_TABLE}
ALL_TABLES = EVENT_STORE_TABLES | set(TABLES.metadata.tables) | {"alembic_version"}


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def exercise(ledger: Ledger, events: int = 3) -> None:
    """Open a key, run a run, rotate it, and append a late event: every table gets rows."""
    s1 = ledger.resolve(KEY, at=T0).session.session_id
    base = {"sessionKey": KEY, "sessionId": s1, "occurredAt": T0.isoformat(), "writer": "runner"}
    ledger.record(
        [{**base, "type": "run.started", "eventId": "e0", "runId": "r1", "trigger": "user"}]
    )
    ledger.record(
        [
            {
                **base,
                "type": "transcript.appended",
                "eventId": f"t{i}",
                "entry": {"id": f"m{i}", "role": "user", "content": "hi", "timestamp": T0},
            }
            for i in range(events)
        ]
    )
    ledger.reset(KEY, expected_session_id=s1)
    ledger.record([{**base, "type": "run.errored", "eventId": "e1", "runId": "r1", "error": "x"}])


# -- upgrade -------------------------------------------------------------------------------


def test_upgrade_creates_every_table_on_an_empty_database(engine: Engine) -> None:
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert tables(engine) == ALL_TABLES
    upgrade(engine)  # a second upgrade is a no-op
    assert current_revision(engine) == head_revision()


def test_upgrade_from_the_previous_revision(engine: Engine, database_url: str) -> None:
    upgrade(engine, FIRST)
    assert current_revision(engine) == FIRST
    assert tables(engine) == EVENT_STORE_TABLES | {"alembic_version"}
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert tables(engine) == ALL_TABLES
    with Ledger.open(database_url, upgrade="never") as ledger:
        exercise(ledger)
        assert ledger.session(KEY).status == "new"


def test_receipts_lose_their_fingerprint_and_retries_still_answer_the_same(
    engine: Engine, database_url: str
) -> None:
    """0007 drops the stored fingerprint with rows in place: a retry is then told apart
    from a reused eventId by the logged event, before and after a round trip through
    the downgrade."""
    with Ledger.open(database_url) as ledger:
        exercise(ledger)
    answers = receipts(engine)
    assert {"e0", "t1", "e1"} <= answers.keys()
    for revision in ("0006", "head"):
        upgrade(engine, revision) if revision == "head" else _downgrade(engine, revision)
        for table in ("ledger_receipts", "ledger_receipts_shadow"):
            columns = {c["name"] for c in inspect(engine).get_columns(table)}
            assert ("fingerprint" in columns) == (revision == "0006")
        assert receipts(engine) == answers
    with Ledger.open(database_url, upgrade="never") as ledger:
        s1 = answers["e0"][1]
        base = {"sessionKey": KEY, "sessionId": s1, "occurredAt": T0.isoformat()}
        same, other = ledger.record(
            [
                {**base, "writer": "runner", "type": "run.started", "eventId": "e0"}
                | {"runId": "r1", "trigger": "user"},
                {**base, "writer": "cron", "type": "run.started", "eventId": "e1"}
                | {"runId": "r1", "trigger": "user"},
            ]
        )
        assert (same.outcome, same.position) == ("applied", answers["e0"][2])
        assert other.outcome == "rejected"
        assert other.reason == "eventId: already used for a different event"


def test_entries_lose_their_id_index_with_rows_in_place(engine: Engine, database_url: str) -> None:
    """0010 drops the unique (session_id, entry_id) index (SQLite by rebuilding the
    table): every entry row survives the round trip through the downgrade, and the
    store still tells a retried append from a reused entry id afterwards."""
    with Ledger.open(database_url) as ledger:
        exercise(ledger)
        s1 = ledger.generations(KEY)[0].session_id
    query = text(
        "SELECT session_id, seq, entry_id, role, content, entry_hash, position "
        "FROM ledger_entries ORDER BY session_id, seq"
    )

    def entries() -> list[tuple[Any, ...]]:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(query)]

    def unique_columns(table: str) -> list[list[str | None]]:
        return [u["column_names"] for u in inspect(engine).get_unique_constraints(table)]

    rows = entries()
    assert len(rows) == 3
    for revision in ("0009", "head"):
        upgrade(engine, revision) if revision == "head" else _downgrade(engine, revision)
        for table in ("ledger_entries", "ledger_entries_shadow"):
            indexed = ["session_id", "entry_id"] in unique_columns(table)
            assert indexed == (revision == "0009"), (table, revision)
        assert entries() == rows
    with Ledger.open(database_url, upgrade="never") as ledger:
        base = {"sessionKey": KEY, "sessionId": s1, "occurredAt": T0.isoformat()}
        entry = {"id": "m0", "role": "user", "content": "hi", "timestamp": T0.isoformat()}
        retry, reuse = ledger.record(
            [
                {**base, "writer": "runner", "type": "transcript.appended", "eventId": "t9"}
                | {"entry": entry},
                {**base, "writer": "runner", "type": "transcript.appended", "eventId": "t10"}
                | {"entry": {**entry, "content": "other"}},
            ]
        )
        assert (retry.outcome, reuse.outcome) == ("duplicate", "rejected")
        assert ledger.verify().ok


def test_entries_lose_their_key_and_link_with_rows_in_place(
    engine: Engine, database_url: str
) -> None:
    """0011 drops `session_key` and `prev_hash` from the entry rows: readers get both
    back from the generation and the previous entry, the same before and after a round
    trip through the downgrade, which fills the columns from those neighbours again."""
    with Ledger.open(database_url) as ledger:
        exercise(ledger)
        s1 = ledger.generations(KEY)[0].session_id
        read = ledger.transcript(KEY, session_id=s1)
    assert [(e.session_key, e.seq) for e in read] == [(KEY, 1), (KEY, 2), (KEY, 3)]
    assert [e.prev_hash for e in read] == ["", read[0].entry_hash, read[1].entry_hash]
    stored = text("SELECT session_id, seq, session_key, prev_hash FROM ledger_entries ORDER BY seq")
    for revision in ("0010", "head"):
        upgrade(engine, revision) if revision == "head" else _downgrade(engine, revision)
        for table in ("ledger_entries", "ledger_entries_shadow"):
            columns = {c["name"] for c in inspect(engine).get_columns(table)}
            kept = {"session_key", "prev_hash"} & columns
            assert kept == ({"session_key", "prev_hash"} if revision == "0010" else set())
        if revision == "0010":
            with engine.connect() as connection:
                rows = [tuple(r) for r in connection.execute(stored)]
            assert rows == [(s1, e.seq, KEY, e.prev_hash) for e in read]
    with Ledger.open(database_url, upgrade="never") as ledger:
        assert ledger.transcript(KEY, session_id=s1) == read
        assert ledger.verify().ok


def test_receipts_lose_their_key_and_late_events_still_name_it(
    engine: Engine, database_url: str
) -> None:
    """0012 drops `session_key` from the receipts: the status report's late events take
    it from the generation, before and after a round trip through the downgrade, which
    fills the column from the generations again."""
    with Ledger.open(database_url) as ledger:
        exercise(ledger)
        late = ledger.status_report().recent_late_events
    assert [(e.event_id, e.session_key) for e in late] == [("e1", KEY)]
    stored = text("SELECT DISTINCT session_key FROM ledger_receipts")
    for revision in ("0011", "head"):
        upgrade(engine, revision) if revision == "head" else _downgrade(engine, revision)
        for table in ("ledger_receipts", "ledger_receipts_shadow"):
            columns = {c["name"] for c in inspect(engine).get_columns(table)}
            assert ("session_key" in columns) == (revision == "0011"), (table, revision)
        if revision == "0011":
            with engine.connect() as connection:
                assert [r[0] for r in connection.execute(stored)] == [KEY]
    with Ledger.open(database_url, upgrade="never") as ledger:
        assert ledger.status_report().recent_late_events == late
        assert ledger.verify().ok


def receipts(engine: Engine) -> dict[str, tuple[Any, ...]]:
    """eventId -> (outcome, sessionId, position) of every receipt."""
    query = text("SELECT event_id, outcome, session_id, position FROM ledger_receipts")
    with engine.connect() as connection:
        return {r[0]: tuple(r[1:]) for r in connection.execute(query)}


def _downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    from sessionledger.infrastructure.schema import alembic_config

    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


@pytest.mark.parametrize("start", [None, FIRST])
def test_cli_db_upgrade_on_a_new_or_old_database(
    engine: Engine, database_url: str, start: str | None
) -> None:
    if start is not None:
        upgrade(engine, start)
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", database_url, "--json"])
    assert result.exit_code == 0, result.output
    assert f'"revision": "{head_revision()}"' in result.output
    assert current_revision(engine) == head_revision()


# -- Ledger.open and the schema it finds ------------------------------------------------------


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "pathlib.Path"])
def test_ledger_open_creates_the_embedded_database(tmp_path: Any, as_path: bool) -> None:
    path = tmp_path / "nested" / "ledger.db"
    with Ledger.open(path if as_path else str(path)) as ledger:
        exercise(ledger)
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_ledger_open_upgrades_an_old_sqlite_file(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url, poolclass=NullPool)
    upgrade(engine, FIRST)
    with Ledger.open(sqlite_url) as ledger:
        exercise(ledger)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_ledger_open_creates_an_empty_postgres_database(postgres_url: str) -> None:
    with Ledger.open(postgres_url) as ledger:
        exercise(ledger)


def test_ledger_open_refuses_an_old_postgres_schema(postgres_url: str) -> None:
    engine = create_engine(postgres_url, poolclass=NullPool)
    upgrade(engine, FIRST)
    with pytest.raises(SchemaMismatch, match=r"run `sessionledger db upgrade`"):
        Ledger.open(postgres_url)
    assert current_revision(engine) == FIRST  # refused, not half-upgraded
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", postgres_url])
    assert result.exit_code == 0, result.output
    with Ledger.open(postgres_url) as ledger:
        exercise(ledger)
    engine.dispose()


def test_upgrade_policy_never_refuses_even_an_empty_database(sqlite_url: str) -> None:
    with pytest.raises(SchemaMismatch, match=r"sessionledger db upgrade"):
        Ledger.open(sqlite_url, upgrade="never")


def test_an_unknown_newer_revision_is_refused(engine: Engine, database_url: str) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(SchemaMismatch, match=r"'9999_from_the_future' is unknown.*newer"):
        Ledger.open(database_url)
    with pytest.raises(SchemaMismatch, match="unknown"):
        Ledger.open(database_url, upgrade="always")
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", database_url])
    assert result.exit_code == 1
    assert "9999_from_the_future" in result.output
    assert "Traceback" not in result.output
    assert current_revision(engine) == "9999_from_the_future"


def test_foreign_tables_without_a_revision_are_refused(engine: Engine, database_url: str) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))
    with pytest.raises(SchemaMismatch, match="no sessionledger schema revision"):
        Ledger.open(database_url)
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", database_url])
    assert result.exit_code == 1
    assert "no sessionledger schema revision" in result.output
    assert tables(engine) == {"customers"}  # nothing was created next to them


# -- code and migrations cannot drift ----------------------------------------------------------


def _sqlite_affinity(type_: TypeEngine[Any], dialect: Any) -> str:
    """SQLite's column affinity for a declared type (https://sqlite.org/datatype3.html 3.1)."""
    name = type_.compile(dialect=dialect).upper()
    if "INT" in name:
        return "INTEGER"
    if any(s in name for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in name or not name:
        return "BLOB"
    if any(s in name for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _compare_type(
    context: MigrationContext,
    inspected_column: Any,
    metadata_column: Any,
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool:
    """True if the types differ. TypeDecorators and variants compare as the DDL they emit.

    PostgreSQL: the compiled type must be identical (VARCHAR(512), TIMESTAMP WITH TIME
    ZONE, BIGINT, UUID, …). SQLite keeps only a declared name and stores by affinity,
    and reflects names it does not know as NUMERIC, so there the affinity must match.
    """
    dialect = context.dialect
    if dialect.name == "sqlite":
        return _sqlite_affinity(metadata_type, dialect) != _sqlite_affinity(inspected_type, dialect)
    declared = metadata_type.compile(dialect=dialect).upper()
    return declared != inspected_type.compile(dialect=dialect).upper()


def _created_indexes(drivername: str) -> set[str]:
    """The indexes of projections.tables that creating its tables on this kind of database
    makes (an index's `ddl_if` may leave it out): the DDL compiled, not executed."""
    names: set[str] = set()

    def executor(statement: Any, *_: Any, **__: Any) -> None:
        if isinstance(statement, CreateIndex):
            names.add(str(statement.element.name))

    TABLES.metadata.create_all(create_mock_engine(f"{drivername}://", executor), checkfirst=False)
    return names


def _code_metadata(ledger: Ledger) -> MetaData:
    """Every table the code reads or writes: ours (projections.tables) and the library's,
    without the indexes whose `ddl_if` leaves them out on this database."""
    metadata = MetaData()
    created = _created_indexes(ledger.store.database.engine.url.drivername)
    for table in TABLES.metadata.tables.values():
        copy = table.to_metadata(metadata)
        copy.indexes -= {i for i in copy.indexes if i.name not in created}
    assert ledger.store.app.snapshots is not None
    library = [*ledger.store.app.recorder.tables, *ledger.store.app.snapshots.recorder.tables]  # type: ignore[attr-defined]
    assert {t.name for t in library} == {EVENTS_TABLE, SNAPSHOTS_TABLE}
    for table in library:
        table.to_metadata(metadata)
    return metadata


def test_table_definitions_match_the_migrations(engine: Engine, database_url: str) -> None:
    upgrade(engine)
    with Ledger.open(database_url, upgrade="never") as ledger:
        metadata = _code_metadata(ledger)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": _compare_type, "compare_server_default": True}
        )
        differences = compare_metadata(context, metadata)
    assert differences == [], "\n".join(map(str, differences))


def test_the_comparison_would_notice_drift(engine: Engine, database_url: str) -> None:
    """Guard against a comparison that passes vacuously."""
    upgrade(engine)
    with Ledger.open(database_url, upgrade="never") as ledger:
        metadata = _code_metadata(ledger)
    from sqlalchemy import Column, Integer, String

    sessions = metadata.tables["ledger_sessions"]
    sessions.append_column(Column("extra", Integer))
    metadata.tables["ledger_generations"].c.state.type = String(10)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": _compare_type})
        kinds = {
            d[0] if isinstance(d, tuple) else d[0][0] for d in compare_metadata(context, metadata)
        }
    expected = {"add_column"} if engine.dialect.name == "sqlite" else {"add_column", "modify_type"}
    assert kinds == expected


# -- the persistence layer creates nothing itself ------------------------------------------------

_DDL = re.compile(r"^\s*(CREATE|ALTER|DROP)\b", re.IGNORECASE)


def test_the_ledger_issues_no_ddl_on_a_migrated_database(engine: Engine, database_url: str) -> None:
    """The library runs with CREATE_TABLE=no: every table is the migrations' business."""
    upgrade(engine)
    statements: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _DDL.match(statement):
            statements.append(statement)

    event.listen(Engine, "before_cursor_execute", spy)
    try:
        with Ledger.open(database_url) as ledger:
            exercise(ledger, events=120)  # enough for a snapshot
            ledger.rebuild()
            assert ledger.generations(KEY)
    finally:
        event.remove(Engine, "before_cursor_execute", spy)
    assert statements == []
    assert tables(engine) == ALL_TABLES


def test_opening_a_new_database_creates_only_what_the_migrations_create(
    engine: Engine, database_url: str
) -> None:
    with Ledger.open(database_url) as ledger:
        exercise(ledger, events=120)
    assert tables(engine) == ALL_TABLES
    with engine.connect() as connection:
        snapshots = connection.execute(text(f"SELECT count(*) FROM {SNAPSHOTS_TABLE}")).scalar()
    assert snapshots == 1
    assert ensure_schema(engine, "never") == head_revision()


def test_processes_starting_together_on_an_empty_database_all_open_it(
    database_url: str, tmp_path: Any
) -> None:
    """API processes started at once race to create the schema: one does, the rest wait."""
    from concurrent.futures import ThreadPoolExecutor

    # eventsourcing_sqlalchemy defines its record classes lazily in a process-wide dict,
    # not thread-safely: define them once before the threads race (processes do not share).
    Ledger.open(f"sqlite:///{tmp_path / 'warm.db'}").close()

    def start(_: int) -> str:
        with Ledger.open(database_url) as ledger:
            return ledger.resolve(KEY, at=T0).session.session_id

    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(start, range(6)))
    assert len(ids) == 1
