"""Hot reads on the DBAPI cursor: a SELECT compiled once per dialect, its rows decoded
column by column only where the stored value differs from the Python one.

SQLAlchemy's per-row result processing (Row objects, a processor call per column) cost
several times the raw select on 1,000-row reads. The statements are still SQLAlchemy
Core (one source of truth for the SQL); only the execution and the decoding are ours.
Decoding matches SQLAlchemy's for the column types the read models use, and refuses any
other type, so a new column cannot be read wrongly by accident.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import starmap
from numbers import Number
from typing import Any, TypeVar, cast

import orjson
import sqlalchemy.exc
from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Connection,
    Dialect,
    Integer,
    LargeBinary,
    String,
    Table,
)
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import SQLCompiler

from sessionledger.projections.tables import Tuple, UTCDateTime, read_utc

Decoder = Callable[[Any], Any]
T = TypeVar("T")
R = TypeVar("R")


def _json_text(loads: Callable[[str], Any]) -> Decoder:
    """A JSON column on SQLite, decoded as SQLAlchemy's SQLite JSON type does: text (or a
    bare number's BLOB, see jsoncodec.dumps_sqlite) by the engine's deserializer; a bare
    number stored before that comes back as the number SQLite made of it (the column's
    numeric affinity)."""

    def decode(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is str and value[:1] == '"':
            # A JSON string holds no numbers, so orjson reads it as any decoder would,
            # without the deserializer's scan for integers beyond 64 bits (transcript
            # content is mostly text).
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        try:
            return loads(value)
        except TypeError:
            if isinstance(value, Number):
                return value
            raise

    return decode


def _json_tuple_text(loads: Callable[[str], Any]) -> Decoder:
    decode = _json_text(loads)
    return lambda value: None if value is None else tuple(decode(value))


def _tuple(value: Any) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _bytes(value: Any) -> bytes | None:
    return value if value is None or type(value) is bytes else bytes(value)


def decoder(column_type: Any, dialect: Dialect) -> Decoder | None:
    """What turns a raw DBAPI value of this column type into what SQLAlchemy returns
    (None: the value is already that)."""
    sqlite = dialect.name == "sqlite"
    # What SQLAlchemy's JSON type decodes with: the engine's json_deserializer.
    loads = getattr(dialect, "_json_deserializer", None) or json.loads
    if isinstance(column_type, UTCDateTime):
        return read_utc
    if isinstance(column_type, Tuple):
        # psycopg decodes JSON itself (with the engine's deserializer); SQLite returns text.
        return _json_tuple_text(loads) if sqlite else _tuple
    if isinstance(column_type, JSON):
        return _json_text(loads) if sqlite else None
    if isinstance(column_type, Boolean):
        return _bool  # SQLite stores 0/1
    if isinstance(column_type, LargeBinary):
        return _bytes
    if isinstance(column_type, (String, Integer)):
        return None
    raise TypeError(f"no raw decoder for {column_type!r}; read it through SQLAlchemy")


def as_tuple(*row: Any) -> tuple[Any, ...]:
    """`into` for RawSelect.rows when a row's values are all that is wanted."""
    return row


def in_field_order(table: Table, row_type: type) -> list[ColumnElement[Any]]:
    """The table's columns in the order of the row's fields, for building rows by
    position: migrations append new columns to a table, wherever the row has the field."""
    names = [f.name for f in dataclasses.fields(row_type)]
    if sorted(names) != sorted(table.columns.keys()):
        raise TypeError(f"{table.name} does not have exactly the fields of {row_type.__name__}")
    return [table.c[name] for name in names]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    compiled: SQLCompiler
    positional: tuple[str, ...] | None
    binds: dict[str, Callable[[Any], Any]]
    decoders: tuple[tuple[int, Decoder], ...]
    # The parameters without SQLAlchemy's construct_params (a Python loop over every
    # bind with several lookups each, per call): the driver's parameter names in order
    # (each a named bind's key, or a literal's), the values of binds that have one, the
    # binds that need one. None (construct_params) for escaped, repeated, expanding or
    # callable binds.
    names: tuple[str, ...] | None
    defaults: dict[str, Any]
    required: frozenset[str]
    processes: tuple[tuple[Any, Callable[[Any], Any]], ...]  # by position or name


class RawSelect:
    """One SELECT run on the DBAPI cursor of the caller's connection (and transaction).

    `decoders` overrides the decoding of result columns by position (for columns whose
    type is not a read-model type, e.g. the library's UUID); None leaves a value as the
    driver returns it."""

    def __init__(
        self, statement: Select[Any], decoders: dict[int, Decoder | None] | None = None
    ) -> None:
        self.statement = statement
        self.overrides = decoders or {}
        self._by_dialect: dict[str, _Compiled] = {}

    def rows(self, connection: Connection, into: Callable[..., T], **params: Any) -> list[T]:
        """Every row, decoded, as `into(*values)`."""
        compiled = self._by_dialect.get(connection.dialect.name)
        if compiled is None:
            compiled = self._compile(connection.dialect)
        names = compiled.names
        args: Any
        if names is not None and params.keys() >= compiled.required:
            defaults = compiled.defaults
            if compiled.positional is None:
                args = {n: params[n] if n in params else defaults[n] for n in names}
            else:
                args = [params[n] if n in params else defaults[n] for n in names]
            for at, process in compiled.processes:
                args[at] = process(args[at])
        else:
            # Raises SQLAlchemy's own error for a missing value.
            values = compiled.compiled.construct_params(params)
            for name, process in compiled.binds.items():
                values[name] = process(values[name])
            args = (
                values
                if compiled.positional is None
                else [values[name] for name in compiled.positional]
            )
        if not connection.in_transaction():
            connection.begin()  # what Connection.execute's autobegin would do
        rows = on_driver(connection, fetch_all, compiled.sql, args)
        if not rows or not compiled.decoders:
            return list(starmap(into, rows))
        # Column by column through map(): no Python-level loop per row or per value.
        columns: list[Iterable[Any]] = list(zip(*rows, strict=True))
        for index, decode in compiled.decoders:
            columns[index] = map(decode, columns[index])
        return list(map(into, *columns))

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        binds: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds[compiled.escaped_bind_names.get(name, name)] = process
        decoders: list[tuple[int, Decoder]] = []
        for index, column in enumerate(self.statement.selected_columns):
            decode = (
                self.overrides[index] if index in self.overrides else decoder(column.type, dialect)
            )
            if decode is not None:
                decoders.append((index, decode))
        positional = tuple(compiled.positiontup or ()) if dialect.positional else None
        by_name = binds_by_name(compiled)
        order = positional if positional is not None else tuple(by_name)
        plain = (
            not compiled.post_compile_params
            and len(set(order)) == len(order)
            and set(order) == set(by_name)
            # a literal's anonymous bind is never given by its key
            and all(
                (b.key == n or not b.required) and not b.callable and not b.expanding
                for n, b in by_name.items()
            )
        )
        defaults = dict(compiled.construct_params(_check=False))
        required = frozenset(n for n, b in by_name.items() if b.required)
        processes = tuple(
            (order.index(n) if positional is not None else n, process)
            for n, process in binds.items()
            if plain
        )
        result = _Compiled(
            compiled.string,
            compiled,
            positional,
            binds,
            tuple(decoders),
            order if plain else None,
            defaults,
            required,
            processes,
        )
        self._by_dialect[dialect.name] = result
        return result


def binds_by_name(compiled: SQLCompiler) -> dict[str, Any]:
    """A compiled statement's binds by the name the driver sees."""
    escaped = compiled.escaped_bind_names
    return {escaped.get(name, name): bind for bind, name in compiled.bind_names.items()}


def on_driver(
    connection: Connection, run: Callable[[Any, str, Any], R], sql: str, parameters: Any
) -> R:
    """`run(cursor, sql, parameters)` on a cursor of the DBAPI connection under
    `connection` (its transaction), the cursor closed afterwards (its rowcount and
    lastrowid stay readable). Driver errors are raised as SQLAlchemy raises them (what
    translate_faults expects), invalidating the connection when the database went away.

    The one way every statement run on the driver goes (writes, hot reads, the SQLite
    events insert): a plain `try`, so the error is mapped only when one is raised (a
    generator context manager per statement cost 1-2 µs, several a command)."""
    try:
        cursor = connection.connection.cursor()
        try:
            return run(cursor, sql, parameters)
        finally:
            cursor.close()
    except connection.dialect.loaded_dbapi.Error as e:
        raise _as_sqlalchemy(connection, sql, parameters, e) from e


def fetch_all(cursor: Any, sql: str, parameters: Any) -> list[tuple[Any, ...]]:
    """`on_driver`'s run for a query: every row."""
    cursor.execute(sql, parameters)
    return cast(list[tuple[Any, ...]], cursor.fetchall())


def _as_sqlalchemy(
    connection: Connection, sql: str, params: Any, e: Exception
) -> sqlalchemy.exc.StatementError:
    """A driver error as SQLAlchemy raises it."""
    dbapi_error = connection.dialect.loaded_dbapi.Error
    try:
        dbapi_connection = connection.connection.dbapi_connection
    except sqlalchemy.exc.SQLAlchemyError:
        dbapi_connection = None
    gone = connection.dialect.is_disconnect(cast(Any, e), dbapi_connection, None)
    if gone:
        connection.invalidate(e)
    return sqlalchemy.exc.DBAPIError.instance(
        sql, params, e, dbapi_error, connection_invalidated=gone, dialect=connection.dialect
    )
