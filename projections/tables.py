"""SQLAlchemy Core tables of the read models, the projection's tracking position and
the store's identifiers (`IDENTIFIERS`).

Alembic owns their DDL (migrations/); these definitions are how the code reads and
writes them and must match the newest migration (a test checks that they do).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy import text as sql_text
from sqlalchemy.types import TypeDecorator, TypeEngine

# The event store's own tables (created by our migrations, used by the library).
EVENTS_TABLE = "sessionledger_events"
SNAPSHOTS_TABLE = "sessionledger_snapshots"
TRACKING_TABLE = "sessionledger_tracking"
PROJECTION_NAME = "read-models"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike.

    On SQLite the text is converted here with the C `fromisoformat` rather than by
    SQLAlchemy's regular expression, which was most of the cost of reading rows."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteDateTimeText())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return bind_sqlite(value)
        return None if value is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Any:
        # SQLite: one plain function instead of TypeDecorator's closure around
        # process_bind_param (same text; a rebuild binds three or four timestamps per event).
        if dialect.name == "sqlite" and self.impl_instance.bind_processor(dialect) is None:
            return bind_sqlite
        return super().bind_processor(dialect)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return read_utc(value)


def read_utc(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime: SQLite's text (no offset, read as
    UTC), or the driver's datetime. Also the raw reads' decoder (projections/raw.py)."""
    if value is None:
        return None
    if type(value) is str:
        try:
            # Reading the text as UTC in one C call: fromisoformat then replace(tzinfo=)
            # is four times slower.
            return datetime.fromisoformat(value + "+00:00")
        except ValueError:
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is None:
        naive: datetime = value
        return naive.replace(tzinfo=UTC)
    aware: datetime = value.astimezone(UTC)
    return aware


def sqlite_text(v: datetime) -> str:
    """The fixed-width text SQLAlchemy's SQLite DATETIME stores (kept, so files stay
    compatible and text comparisons in SQL stay chronological) for a UTC moment:
    `isoformat` pads the year to four digits and, with timespec, always writes
    microseconds; the "+00:00" it appends is cut off.

    `isoformat` costs about 7,000 instructions a call, and most of a command's
    timestamps are moments already written (its recorded_at goes into the generation,
    entry and receipt rows; a cached row's opened_at and started_at every command), so
    the text of recent UTC moments is remembered. Only plain datetimes in UTC itself are
    looked up: with one tzinfo, equal means the same wall time and so the same text
    (across other zones equality is by instant, and a fold=1 wall time equals its
    fold=0 twin)."""
    if v.tzinfo is UTC and type(v) is datetime:
        text = _TEXTS.get(v)
        if text is None:
            text = v.isoformat(" ", "microseconds")[:-6]
            if len(_TEXTS) >= _TEXTS_KEPT:
                _TEXTS.clear()
            _TEXTS[v] = text
        return text
    return v.isoformat(" ", "microseconds")[:-6]


# sqlite_text's recent UTC moments (a rebuild's every event brings a new one).
_TEXTS: dict[datetime, str] = {}
_TEXTS_KEPT = 1024


def bind_sqlite(value: datetime | None) -> str | None:
    """UTCDateTime.process_bind_param on SQLite."""
    if value is None:
        return None
    if value.tzinfo is UTC:
        # sqlite_text's remembered text, looked up here: one call less per timestamp.
        text = _TEXTS.get(value) if type(value) is datetime else None
        return text if text is not None else sqlite_text(value)
    return sqlite_text(value.astimezone(UTC))


class _SQLiteDateTimeText(String):
    """A SQLite DATETIME column read and written as its text (UTCDateTime converts it);
    its DDL is still DATETIME."""

    __visit_name__ = "DATETIME"


class Tuple(TypeDecorator[tuple[str, ...]]):
    """A JSON list that reads back as a tuple (rows are immutable)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return list(value) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> tuple[str, ...] | None:
        return tuple(value) if value is not None else None


KEY = String(512)
ARCHIVED = sql_text("outcome = 'archived'")  # receipts of events fenced off a rotated generation
RUNNING = sql_text("status = 'running'")  # runs not ended yet
ID = String(128)
KEY_PART = String(512)  # agent, channel, kind: a part of a key may be nearly all of it
SHORT = String(32)


@dataclass(frozen=True)
class ReadModelTables:
    metadata: MetaData
    sessions: Table
    generations: Table
    runs: Table
    entries: Table
    receipts: Table
    tracking: Table

    @property
    def projected(self) -> tuple[Table, ...]:
        """Tables the fold writes (tracking excluded)."""
        return (self.sessions, self.generations, self.runs, self.entries, self.receipts)


def build_tables(suffix: str = "", metadata: MetaData | None = None) -> ReadModelTables:
    """The read-model tables; a suffix names a shadow copy (used by rebuilds)."""
    metadata = metadata if metadata is not None else MetaData()
    sessions = Table(
        f"ledger_sessions{suffix}",
        metadata,
        Column("session_key", KEY, primary_key=True),
        Column("session_id", ID, nullable=False),
        Column("agent", KEY_PART),
        Column("channel", KEY_PART),
        Column("kind", KEY_PART),
        Column("created_at", UTCDateTime, nullable=False),
        Column("position", BigInteger, nullable=False),
        Index(f"ix_ledger_sessions{suffix}_agent_channel", "agent", "channel"),
        Index(f"ix_ledger_sessions{suffix}_channel", "channel"),
    )
    generations = Table(
        f"ledger_generations{suffix}",
        metadata,
        Column("session_id", ID, primary_key=True),
        Column("session_key", KEY, nullable=False),
        Column("previous_session_id", ID),
        Column("next_session_id", ID),
        Column("open_reason", SHORT, nullable=False),
        Column("state", SHORT, nullable=False),
        Column("opened_at", UTCDateTime, nullable=False),
        Column("opened_position", BigInteger, nullable=False),
        Column("archived_at", UTCDateTime),
        Column("archive_reason", SHORT),
        Column("status", SHORT, nullable=False),
        Column("active_run_ids", Tuple, nullable=False),
        Column("last_run_id", ID),
        Column("last_error", Text),
        Column("started_at", UTCDateTime),
        Column("ended_at", UTCDateTime),
        Column("runtime_ms", BigInteger),
        Column("input_tokens", BigInteger, nullable=False),
        Column("output_tokens", BigInteger, nullable=False),
        Column("cache_read_tokens", BigInteger, nullable=False),
        Column("cache_write_tokens", BigInteger, nullable=False),
        Column("model", Text),
        Column("provider", Text),
        Column("last_interaction_at", UTCDateTime),
        Column("entry_count", Integer, nullable=False),
        Column("resumable", Boolean, nullable=False),
        Column("head_hash", String(64), nullable=False),
        Column("bindings", JSON, nullable=False),
        Column("overrides", JSON, nullable=False),
        Column("late_events", Integer, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("position", BigInteger, nullable=False),
        Column("pruned_at", UTCDateTime),
        Index(f"ix_ledger_generations{suffix}_session_key", "session_key"),
        Index(f"ix_ledger_generations{suffix}_status_state", "status", "state"),
        Index(f"ix_ledger_generations{suffix}_updated_at", "updated_at"),
        Index(f"ix_ledger_generations{suffix}_resumable_state", "resumable", "state"),
    )
    runs = Table(
        f"ledger_runs{suffix}",
        metadata,
        Column("run_id", ID, primary_key=True),
        Column("session_key", KEY, nullable=False),
        Column("session_id", ID, nullable=False),
        Column("status", SHORT, nullable=False),
        Column("trigger", SHORT, nullable=False),
        Column("writer", SHORT, nullable=False),
        Column("model", Text),
        Column("provider", Text),
        Column("started_at", UTCDateTime, nullable=False),
        Column("ended_at", UTCDateTime),
        Column("runtime_ms", BigInteger),
        Column("stop_reason", Text),
        Column("error", Text),
        Column("error_kind", Text),
        Column("input_tokens", BigInteger, nullable=False),
        Column("output_tokens", BigInteger, nullable=False),
        Column("cache_read_tokens", BigInteger, nullable=False),
        Column("cache_write_tokens", BigInteger, nullable=False),
        Column("late", Boolean, nullable=False),
        Column("started_position", BigInteger, nullable=False),
        Column("ended_position", BigInteger),
        Column("updated_at", UTCDateTime, nullable=False),
        # parsed from the key like the session row's (0005 added them, hence last)
        Column("agent", KEY_PART),
        Column("channel", KEY_PART),
        Index(f"ix_ledger_runs{suffix}_session_id", "session_id"),
        Index(f"ix_ledger_runs{suffix}_status_updated_at", "status", "updated_at"),
        *_running_indexes(suffix),
        *(_updated_at_index(suffix) if suffix else _usage_indexes()),
    )
    entries = Table(
        f"ledger_entries{suffix}",
        metadata,
        Column("session_id", ID, primary_key=True),
        Column("seq", Integer, primary_key=True),
        Column("entry_id", ID, nullable=False),
        Column("parent_id", ID),
        Column("role", SHORT, nullable=False),
        Column("content", JSON),
        Column("timestamp", UTCDateTime, nullable=False),
        Column("writer", SHORT, nullable=False),
        Column("run_id", ID),
        # No session_key, no prev_hash: the generation's row and the previous entry's
        # hold them (migration 0011); EntryView puts them back for readers.
        Column("entry_hash", String(64), nullable=False),
        Column("position", BigInteger, nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
        # No index by entry id: nothing reads one, and the aggregate decides that an id
        # is used once a generation (migration 0010 dropped the unique one).
    )
    receipts = Table(
        f"ledger_receipts{suffix}",
        metadata,
        Column("event_id", ID, primary_key=True),
        # No session_key: the generation's row holds it (migration 0012).
        Column("session_id", ID, nullable=False),
        Column("current_session_id", ID),
        Column("outcome", SHORT, nullable=False),
        Column("position", BigInteger, nullable=False),
        Column("recorded_at", UTCDateTime, nullable=False),
        # Only the status report's fenced late events read receipts by time: an index
        # of the archived ones alone, not an entry (and page) for every event recorded.
        Index(
            f"ix_ledger_receipts{suffix}_archived_recorded_at",
            "recorded_at",
            sqlite_where=ARCHIVED,
            postgresql_where=ARCHIVED,
        ),
    )
    tracking = Table(
        f"{TRACKING_TABLE}{suffix}",
        metadata,
        Column("application_name", String(32), primary_key=True),
        Column("notification_id", BigInteger().with_variant(Integer(), "sqlite")),
    )
    return ReadModelTables(metadata, sessions, generations, runs, entries, receipts, tracking)


def _running_indexes(suffix: str) -> tuple[Index, ...]:
    """The runs still running, oldest first: the status report's active runs and
    `recover`'s stale ones (both name the status as a literal, so the planner sees the
    condition). Partial: a run leaves it when it ends, so it holds the few running runs
    instead of every run ever started. On SQLite it also holds the report's columns:
    5,000 active runs cost 28 ms in row lookups and a sort. PostgreSQL limits a btree
    entry to about 2.7 kB, which a model or provider name could exceed, so there it
    holds the order only. It leads with the (constant) status: without statistics,
    SQLite's planner takes a full scan of any index, partial or not, for a scan of every
    row, and would rather search the status index and sort."""
    where: dict[str, Any] = {"sqlite_where": RUNNING, "postgresql_where": RUNNING}
    order = ("status", "started_at", "run_id")
    shown = ("session_key", "session_id", "trigger", "writer", "model", "provider")
    return (
        Index(f"ix_ledger_runs{suffix}_running", *order, **where).ddl_if(dialect="postgresql"),
        Index(f"ix_ledger_runs{suffix}_running_covering", *order, *shown, **where).ddl_if(
            dialect="sqlite"
        ),
    )


def _updated_at_index(suffix: str) -> tuple[Index, ...]:
    return (Index(f"ix_ledger_runs{suffix}_updated_at", "updated_at"),)


def _usage_indexes() -> tuple[Index, ...]:
    """Indexes for the status report's usage of runs that ended in a window
    (projections/reports.py `_usage`).

    SQLite groups by sorting, so there two covering indexes let it read the
    combinations present in the window from the first and each one's sums from the
    second, touching no table row; the first leads with `updated_at`, so it also does
    the plain index's job. PostgreSQL hash-aggregates the window from the plain
    `updated_at` index, and a btree entry there is limited to about 2.7 kB, which a
    model or provider name of up to 4,096 characters could exceed. Not on the shadow
    tables: the report never reads them, and a rebuild would pay to keep them."""
    groups = ("status", "agent", "channel", "model", "provider")
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    return (
        *(index.ddl_if(dialect="postgresql") for index in _updated_at_index("")),
        Index("ix_ledger_runs_window_groups", "updated_at", *groups).ddl_if(dialect="sqlite"),
        Index("ix_ledger_runs_group_usage", *groups, "updated_at", *tokens).ddl_if(
            dialect="sqlite"
        ),
    )


TABLES = build_tables()
# Where `rebuild` and `verify` fold the log before swapping or comparing (same metadata,
# so the migrations own them like every other table).
SHADOW_SUFFIX = "_shadow"
SHADOW = build_tables(SHADOW_SUFFIX, TABLES.metadata)

# The identifiers that name one session key store-wide, each at most once: runIds
# (`runId`) and sessionIds (`sessionId`). Not a read model (no shadow twin, rebuilds
# leave it alone): the write path inserts an identifier in the transaction that logs the
# event introducing it, and the primary key holds it to its first key
# (infrastructure/identifiers.py).
IDENTIFIERS_TABLE = "sessionledger_identifiers"
IDENTIFIERS = Table(
    IDENTIFIERS_TABLE,
    TABLES.metadata,
    Column("field", String(16), primary_key=True),
    Column("identifier", ID, primary_key=True),
    Column("session_key", KEY, nullable=False),
)
