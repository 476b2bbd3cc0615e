"""Hot-path statements compiled once and run straight on the SQLite driver.

Why: through SQLAlchemy, setting up the execution context and the result of each statement
took far more CPU than SQLite spent running it (py-spy on ``bench/slack_actions.py``: about a
fifth of a Slack click in the statements' Python, 2% inside SQLite). A ``Prepared`` keeps the
Core statement as the one source of truth: SQLAlchemy compiles it (once per set of parameter
names) and the column types supply their own converters (JSON, DateTime, Boolean); only the
execution is done here. Errors are SQLAlchemy's (an ``IntegrityError`` stays one), and on any
other database the statement simply runs through SQLAlchemy.
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import JSON, Connection, Dialect, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import base as sqlite_types
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeEngine

from bot import jsontext

Converter = Callable[[Any], Any] | None


class Rows(Protocol):
    """What callers use of a result: SQLAlchemy's ``Result`` has it too."""

    rowcount: int

    def one_or_none(self) -> Any: ...
    def first(self) -> Any: ...
    def scalar_one(self) -> Any: ...
    def scalar_one_or_none(self) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...


class FetchedRows:
    """Rows already fetched from the driver and converted."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def one_or_none(self) -> tuple[Any, ...] | None:
        if len(self.rows) > 1:
            raise MultipleResultsFound("more than one row where at most one was expected")
        return self.first()

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return row[0] if row is not None else None

    def scalar_one(self) -> Any:
        row = self.one_or_none()
        if row is None:
            raise NoResultFound("no row where exactly one was expected")
        return row[0]


@dataclass(frozen=True)
class _Plan:
    sql: str
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # the parameters, in order
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, converter)
    defaults: dict[str, Any]  # values of parameters not given: column defaults, literals
    new_id: bool = False  # the result is the one row (cursor.lastrowid,)


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The values of ``names`` as a tuple, picked in C (itemgetter returns a bare value for a
    single name, and cannot be made for none)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    return lambda params: tuple(params[name] for name in names)


def _column_defaults(statement: Executable) -> dict[str, Any]:
    """The scalar defaults SQLAlchemy fills in at execution (an INSERT's missing columns);
    a computed default or ``onupdate`` is refused rather than silently skipped."""
    table = getattr(statement, "table", None)
    if table is None:
        return {}
    inserting = bool(getattr(statement, "is_insert", False))
    found: dict[str, Any] = {}
    for column in table.columns:
        if column.onupdate is not None or (
            inserting and column.default is not None and not column.default.is_scalar
        ):
            raise TypeError(
                f"{table.name}.{column.name} has a computed default: "
                "run this statement through SQLAlchemy instead"
            )
        if inserting and column.default is not None:
            found[column.key] = column.default.arg
    return found


class Prepared:
    """A Core statement plus, per set of parameter names, its SQLite SQL and converters.

    ``on_sqlite``, for an ``INSERT … RETURNING`` of the table's integer primary key: the same
    INSERT without RETURNING, run there instead, its one row being ``cursor.lastrowid``
    (SQLite's RETURNING goes through a temporary table: a fifth of the INSERT's cost).
    """

    def __init__(self, statement: Executable, *, on_sqlite: Executable | None = None) -> None:
        if on_sqlite is not None and (
            getattr(on_sqlite, "_post_values_clause", None) is not None
            or getattr(on_sqlite, "_prefixes", ())
        ):
            # a skipped row (ON CONFLICT, OR IGNORE) leaves lastrowid at the previous insert's
            raise TypeError("on_sqlite takes a plain INSERT: a skipped row has no new id")
        self.statement = statement
        self._on_sqlite = on_sqlite
        self._plans: dict[frozenset[str], _Plan] = {}
        self._readers: tuple[Converter, ...] | None = None

    def __call__(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Rows:
        params = params or {}
        if conn.dialect.driver != "pysqlite":
            return conn.execute(self.statement, dict(params))  # type: ignore[return-value]
        plan = self._plans.get(frozenset(params)) or self._plan(conn, params)
        values: Any = plan.values({**plan.defaults, **params} if plan.defaults else params)
        if plan.converters:
            values = list(values)
            for i, convert in plan.converters:
                values[i] = convert(values[i])
        try:
            cursor = conn.connection.driver_connection.execute(plan.sql, values)  # type: ignore[union-attr]
            if plan.new_id:
                return FetchedRows([(cursor.lastrowid,)], cursor.rowcount)
            fetched = cursor.fetchall() if cursor.description is not None else []
        except sqlite3.Error as err:
            raise DBAPIError.instance(plan.sql, values, err, sqlite3.Error) from err
        if fetched:
            readers = self._readers or self._result_readers(conn)
            fetched = [
                tuple(
                    v if read is None or v is None else read(v)
                    for read, v in zip(readers, row, strict=True)
                )
                for row in fetched
            ]
        return FetchedRows(fetched, cursor.rowcount)

    def _plan(self, conn: Connection, params: Mapping[str, Any]) -> _Plan:
        keys = frozenset(params)
        plan = self._plans.get(keys)
        if plan is None:
            dialect = conn.dialect
            statement = self._on_sqlite if self._on_sqlite is not None else self.statement
            compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
            names = tuple(compiled.positiontup or ())
            binders = tuple(_binder(compiled.binds[n].type, dialect) for n in names)
            defaults = _column_defaults(statement)
            fixed: dict[str, Any] = {}
            for name in names:
                if name in keys:
                    continue
                if name in defaults:
                    fixed[name] = defaults[name]
                    continue
                bind = compiled.binds[name]  # a value written into the statement itself
                if bind.required or bind.callable is not None:
                    raise TypeError(f"no value for the statement's parameter {name!r}")
                fixed[name] = bind.value
            converters = tuple((i, bind) for i, bind in enumerate(binders) if bind is not None)
            new_id = self._on_sqlite is not None
            plan = _Plan(compiled.string, _getter(names), converters, fixed, new_id)
            self._plans[keys] = plan
        return plan

    def _result_readers(self, conn: Connection) -> tuple[Converter, ...]:
        if self._readers is None:
            columns = self.statement.exported_columns  # type: ignore[attr-defined]
            self._readers = tuple(
                column.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
                for column in columns
            )
        return self._readers


def _binder(column_type: TypeEngine[Any], dialect: Dialect) -> Converter:
    """The column type's own converter, or a faster one that writes the same text: these
    two were a fifth of an answer's statement cost (callgrind: most of it in ``%`` formats
    and the ``json`` module)."""
    impl = column_type.dialect_impl(dialect)
    own = impl.bind_processor(dialect)
    if own is None:
        return None
    if isinstance(impl, sqlite_types.DATETIME) and impl._storage_format == _DATETIME_FORMAT:
        return _datetime_text(own)
    if isinstance(impl, JSON) and dialect._json_serializer in (None, jsontext.dumps):  # type: ignore[attr-defined]
        return _json_text(own)
    return own


_DATETIME_FORMAT = sqlite_types.DATETIME._storage_format


_last_datetime: tuple[Any, str] = (object(), "")  # a body stamps all its rows with one `now`


def _datetime_text(own: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def process(value: Any) -> Any:
        global _last_datetime  # shared by every statement's converter: a body's rows differ
        seen = _last_datetime  # one read: another thread may replace it meanwhile
        if value is seen[0]:
            return seen[1]
        if type(value) is not datetime:
            return own(value)
        # the same "YYYY-MM-DD HH:MM:SS.ffffff" as SQLAlchemy's, the zone dropped as it does
        text = value.isoformat(" ", "microseconds")[:26]
        _last_datetime = (value, text)
        return text

    return process


def _json_text(own: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def process(value: Any) -> Any:
        # what the engine's serializer (jsontext.dumps, see database.py) writes, minus
        # SQLAlchemy's checks for its NULL markers, which no plain value needs
        if type(value) in _PLAIN_JSON:
            return jsontext.dumps(value)
        return own(value)

    return process


_PLAIN_JSON = frozenset({dict, list, str, int, float, bool})


def insert_or_skip(table: Table) -> dict[str, Prepared]:
    """INSERT … ON CONFLICT DO NOTHING, per dialect name (SQLite or PostgreSQL)."""
    return {
        "postgresql": Prepared(pg_insert(table).on_conflict_do_nothing()),
        "sqlite": Prepared(sqlite_insert(table).on_conflict_do_nothing()),
    }
