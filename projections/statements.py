"""Writes on the driver's cursor: INSERT/UPDATE/DELETE compiled once per dialect.

SQLAlchemy's per-execute machinery (compiled-cache lookup, parameter processing)
cost 50-100 µs a statement against 5-10 µs in the driver, and the write path runs
several statements per command; for executemany its per-row bind processing was a
third of ingest and rebuild. The SQL text and the value conversions stay
SQLAlchemy's own: the statement is compiled for the connection's dialect and each
value passes through its column type's bind processor, so what is stored is what
SQLAlchemy would store. Reads go through projections.raw (RawSelect); both run in
the caller's transaction and raise driver errors as SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from keyword import iskeyword
from operator import attrgetter
from typing import Any, cast

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from sessionledger.projections.raw import on_driver


class CompiledStatement:
    """One statement's SQL for one dialect, its parameters in the driver's order, and
    the conversion of each parameter."""

    __slots__ = (
        "_active_binds",
        "_defaults",
        "_getters",
        "_memoized",
        "names",
        "positional",
        "sql",
    )

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        self.names: tuple[str, ...] = (
            tuple(compiled.positiontup or ()) if self.positional else tuple(by_name)
        )
        binds = [
            by_name[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.names
        ]
        # Only the parameters whose type converts anything cost a call.
        self._active_binds: list[tuple[int, Callable[[Any], Any]]] = [
            (i, p) for i, p in enumerate(binds) if p is not None
        ]
        self._defaults = compiled.construct_params(_check=False)
        self._getters: dict[tuple[Any, ...], Callable[[Any], Any]] = {}
        self._memoized: set[str] = set()

    def memoize(self, name: str) -> None:
        """Remember what the bind processor of parameter `name` made of each value: for
        hashable, immutable values few of which recur (an aggregate id per event of a
        batch). The converted value is the processor's own, shared between rows."""
        if name in self._memoized:
            return
        self._memoized.add(name)
        index = self.names.index(name)
        self._active_binds = [(i, _memo(p) if i == index else p) for i, p in self._active_binds]
        self._getters.clear()

    def parameters(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters from values by bind name (literals the statement was
        built with keep their values)."""
        defaults = self._defaults
        return self._pack([values[n] if n in values else defaults[n] for n in self.names])

    def row_parameters(self, row: Any, renames: Mapping[str, str] | None = None) -> Any:
        """The driver's parameters from a row object's attributes (bind name = attribute
        name unless renamed), without building a dict per row."""
        return self._packer(renames)(row)

    def rows_parameters(
        self, rows: Iterable[Any], renames: Mapping[str, str] | None = None
    ) -> list[Any]:
        """row_parameters of each row."""
        return list(map(self._packer(renames), rows))

    def tuples_parameters(self, rows: Iterable[Sequence[Any]], fields: Sequence[str]) -> list[Any]:
        """The driver's parameters from rows that are tuples of `fields` (bind names),
        without an object per row to read them from."""
        key = ("", *fields)  # no renames key is a 1-tuple of pairs, nor starts with ""
        pack = self._getters.get(key)
        if pack is None:
            indexes = [f"[{fields.index(name)}]" for name in self.names]
            generated = self._generated(indexes, access="")
            assert generated is not None  # indexes need no identifier check
            pack = self._getters[key] = generated
        return list(map(pack, rows))

    def _packer(self, renames: Mapping[str, str] | None) -> Callable[[Any], Any]:
        key = tuple(renames.items()) if renames else ()
        pack = self._getters.get(key)
        if pack is None:
            names = [renames.get(n, n) for n in self.names] if renames else list(self.names)
            pack = self._getters[key] = self._generated(names) or self._general(names)
        return pack

    def _generated(self, attributes: list[str], access: str = ".") -> Callable[[Any], Any] | None:
        """One generated function per statement that reads each attribute (or, with
        `access` "", each `[index]` of a tuple) and converts it in a single expression (a
        rebuild packs three rows per event: the attrgetter tuple, list, per-index loop and
        tuple cost more than the values themselves)."""
        if access and not all(a.isidentifier() and not iskeyword(a) for a in attributes):
            return None
        scope: dict[str, Any] = {}
        values = [f"__row{access}{a}" for a in attributes]
        for index, process in self._active_binds:
            scope[f"__p{index}"] = process
            values[index] = f"__p{index}({values[index]})"
        if self.positional:
            body = "(" + "".join(f"{v}, " for v in values) + ")"
        else:
            pairs = zip(self.names, values, strict=True)
            body = "{" + ", ".join(f"{n!r}: {v}" for n, v in pairs) + "}"
        exec(f"def pack(__row):\n    return {body}\n", scope)
        pack: Callable[[Any], Any] = scope["pack"]
        return pack

    def _general(self, attributes: list[str]) -> Callable[[Any], Any]:
        one = attrgetter(*attributes)
        get = (lambda row: [one(row)]) if len(attributes) == 1 else one
        return lambda row: self._pack(list(get(row)))

    def _pack(self, values: list[Any]) -> Any:
        for index, process in self._active_binds:
            values[index] = process(values[index])
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


# Values a memoized processor remembers before it starts afresh.
MEMO_KEPT = 4096


def _memo(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    known: dict[Any, Any] = {}

    def memoized(value: Any) -> Any:
        converted = known.get(value, _MISSING)
        if converted is _MISSING:
            if len(known) >= MEMO_KEPT:
                known.clear()
            converted = known[value] = process(value)
        return converted

    return memoized


_MISSING = object()


class StatementCache:
    """Compiled statements by builder, its arguments and the dialect: each Core
    statement is built and compiled once."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[Any, ...], CompiledStatement] = {}

    def get(
        self, connection: Connection, build: Callable[..., ClauseElement], *args: Any
    ) -> CompiledStatement:
        key = (build, id(connection.dialect), *args)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = CompiledStatement(build(*args), connection.dialect)
        return compiled


# Every write run on the driver, compiled once per builder, arguments and dialect.
STATEMENTS = StatementCache()


def _rowcount(cursor: Any, sql: str, parameters: Any) -> int:
    cursor.execute(sql, parameters)
    return int(cursor.rowcount)


def _many(cursor: Any, sql: str, parameters: Any) -> None:
    cursor.executemany(sql, parameters)


def execute(connection: Connection, statement: CompiledStatement, values: Mapping[str, Any]) -> int:
    """Run one statement; returns the driver's rowcount."""
    return on_driver(connection, _rowcount, statement.sql, statement.parameters(values))


def execute_many(
    connection: Connection, statement: CompiledStatement, parameters: list[Any]
) -> None:
    """Run one statement per parameter set (already packed), as one driver executemany."""
    if parameters:
        on_driver(connection, _many, statement.sql, parameters)
