"""The async engine and session factory, created per app (never at import) and disposed with it.

SQLite gets WAL, ``synchronous=NORMAL``, foreign keys and a busy timeout on every connection;
a plain ``postgresql://`` URL is mapped to asyncpg. Schema changes go through Alembic only.
"""

from __future__ import annotations

import asyncio
import random
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bot import jsontext
from bot.errors import ConfigError, DatabaseError, DatabaseNeedsUpgrade
from bot.store.sqlite_runner import READONLY, SqliteRunner

MIGRATIONS = Path(__file__).parent / "migrations"
TRANSIENT_TRIES = 4
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
T = TypeVar("T")


def _transient(err: DBAPIError) -> bool:
    return getattr(err.orig, "sqlstate", None) in TRANSIENT_SQLSTATES


def database_url(value: str) -> str:
    """Turn ``--db`` (a file path or a URL) into an async SQLAlchemy URL."""
    if "://" not in value:
        return f"sqlite+aiosqlite:///{Path(value).expanduser().resolve()}"
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if value.startswith(plain):
            value = driver + value[len(plain) :]
    try:
        parsed = make_url(value)
    except ArgumentError as err:
        raise ConfigError(f"cannot read database URL {value!r}: {err}") from err
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        shown = parsed.render_as_string(hide_password=True)
        raise ConfigError(
            f"Parley stores its data in SQLite or PostgreSQL, not {parsed.get_backend_name()} "
            f"({shown}): give a file path or a postgresql:// URL"
        )
    return value


def redacted(url: str) -> str:
    """A database fit to print: a SQLite file by its path, a server URL without password."""
    parsed = make_url(database_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return parsed.database
    return parsed.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take transactions into our own hands (see _sqlite_begin); pysqlite's implicit BEGIN
    # would start deferred transactions that fail with SQLITE_BUSY_SNAPSHOT under WAL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # deleted rows are overwritten, not left readable in free pages (`parley forget`);
    # Debian's SQLite does this by default, other builds do not
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers queue on the busy timeout instead of failing mid-transaction; readers
    (``Database.reads``) take a plain snapshot so a long export never blocks the chat.

    The mode comes from ``conn.info`` (set by SqliteRunner for each transaction: a dict
    write) or else the execution options (the async engine's read sessions). The BEGIN goes
    straight to the driver: through SQLAlchemy it cost as much as an answer's INSERT."""
    readonly = conn.info.get(READONLY)
    if readonly is None:
        readonly = conn.get_execution_options().get(READONLY, False)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
    finally:
        cursor.close()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


class Database:
    """Owns the engines. Every write is a ``run(body)`` (on SQLite that is the one place
    writes are ordered, see SqliteRunner); ``read(body)`` and ``reads()`` (ORM sessions for
    long reports and exports) only read."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        # one JSON spelling in the database, whichever path wrote it (see bot/jsontext.py)
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": jsontext.dumps}
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        self._sqlite: SqliteRunner | None = None
        if self.is_sqlite:
            # The hot path runs whole transactions on a plain pysqlite engine (see
            # SqliteRunner); aiosqlite would hop threads once per statement.
            sync_engine = create_engine(
                self.url.replace("sqlite+aiosqlite", "sqlite", 1),
                pool_reset_on_return=None,
                json_serializer=jsontext.dumps,
            )
            event.listen(sync_engine, "connect", _sqlite_pragmas)
            event.listen(sync_engine, "begin", _sqlite_begin)
            self._sqlite = SqliteRunner(sync_engine)
        self.reads = async_sessionmaker(
            self.engine.execution_options(**{READONLY: True}),
            expire_on_commit=False,
            class_=AsyncSession,
        )

    async def run(self, body: Callable[[Connection], T]) -> T:
        """Run ``body`` (synchronous Core statements) as one write transaction, committed
        when it returns and rolled back when it raises. SQLite: see SqliteRunner.
        PostgreSQL: via ``run_sync``; a body PostgreSQL chose as a deadlock's victim (or a
        serialization failure) rolled back whole, so it simply runs again."""
        if self._sqlite is not None:
            return await self._sqlite.write(body)
        for attempt in range(1, TRANSIENT_TRIES + 1):
            try:
                async with self.engine.begin() as conn:
                    return await conn.run_sync(body)
            except DBAPIError as err:
                if attempt == TRANSIENT_TRIES or not _transient(err):
                    raise
                await asyncio.sleep(random.uniform(0, 0.02 * attempt))  # out of step
        raise AssertionError("unreachable")

    async def read(self, body: Callable[[Connection], T]) -> T:
        """Run ``body`` in a read-only transaction (on SQLite it never takes the write lock)."""
        if self._sqlite is not None:
            return await self._sqlite.read(body)
        async with self.engine.connect() as conn:
            return await conn.run_sync(body)

    async def scrub(self, *, wait: bool = True) -> bool:
        """After a deletion that must leave no copy (``parley forget``): on SQLite, copy the
        write-ahead log back into the database file and empty it (old page images in the
        ``-wal`` file still hold deleted rows). False when another connection kept it busy;
        the next checkpoint then does it. Nothing to do on PostgreSQL (autovacuum)."""
        if self._sqlite is None:
            return True
        return await self._sqlite.truncate_wal(wait=wait)

    @property
    def display(self) -> str:
        return redacted(self.url)

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file (None for a server database or an in-memory one)."""
        name = make_url(self.url).database if self.is_sqlite else None
        return Path(name) if name and name != ":memory:" else None

    async def dispose(self) -> None:
        if self._sqlite is not None:  # first: it commits the writes it has accepted
            await self._sqlite.close()
        await self.engine.dispose()

    async def revision(self) -> tuple[str | None, bool]:
        """(current Alembic revision, whether the database has any tables at all)."""
        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(_revision)
        except (SQLAlchemyError, OSError) as err:
            raise DatabaseError(f"cannot open database {self.display}: {err}") from err

    async def upgrade(self, revision: str = "head") -> tuple[str | None, str]:
        """Apply migrations; returns (revision before, revision after). Another program's
        database is left alone: creating Parley's tables among its own would be a mess."""
        before, has_tables = await self.revision()
        if before is None and has_tables:
            raise self._not_parleys()
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade, revision)
        except SQLAlchemyError as err:
            raise DatabaseError(f"migration failed on {self.display}: {err}") from err
        after, _ = await self.revision()
        return before, after or ""

    def _not_parleys(self) -> DatabaseError:
        return DatabaseError(
            f"{self.display} holds tables but is not a Parley database (no schema "
            "revision): point --db / DATABASE_URL at Parley's own database"
        )

    async def ensure_ready(self, *, create_if_empty: bool = True) -> bool:
        """Check the schema is current. A brand-new empty database is created (returns True);
        an older one raises DatabaseNeedsUpgrade, because migrating live data is a decision."""
        current, has_tables = await self.revision()
        head = head_revision()
        if current == head:
            return False
        if current is None and not has_tables and create_if_empty:
            await self.upgrade()
            return True
        if current is None and has_tables:
            raise self._not_parleys()
        if current is not None and not _known_revision(current):
            raise DatabaseError(
                f"the database {self.display} is at schema revision {current}, made by a "
                f"newer Parley than this one ({head}): upgrade Parley, not the database"
            )
        raise DatabaseNeedsUpgrade(
            f"the database {self.display} is at schema revision {current or 'none'}, "
            f"this Parley needs {head}: run `parley db upgrade --db {shlex.quote(self.display)}` "
            "(back it up first)"
        )


def _known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:  # "Can't locate revision": none such in this Parley
        return False


def _revision(conn: Connection) -> tuple[str | None, bool]:
    current = MigrationContext.configure(conn).get_current_revision()
    return current, bool(inspect(conn).get_table_names())


MIGRATION_LOCK = 0x5061726C6579  # "Parley": PostgreSQL advisory lock key for migrations


def _upgrade(conn: Connection, revision: str) -> None:
    if conn.dialect.name == "postgresql":
        # Replicas starting together: one migrates; the others wait here, then find the
        # schema current and do nothing (without it, the second failed creating the tables).
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


async def open_database(
    url: str, *, create: bool = True, announce: Callable[[str], None] = print
) -> Database:
    """The database, checked and ready. ``create=False`` for commands that only read or
    delete: a mistyped --db must not answer from a new, empty file."""
    db = Database(url)
    path = db.sqlite_path
    if path is not None and path.is_dir():
        await db.dispose()
        raise ConfigError(f"{path} is a folder: give --db a database file, e.g. {path}/parley.db")
    if not create and path is not None and not path.exists():
        await db.dispose()
        raise ConfigError(
            f"no database at {path}: check --db / DATABASE_URL "
            "(`parley serve` or `parley chat` creates one)"
        )
    try:
        if await db.ensure_ready():
            announce(f"created a new database at {db.display}")
    except DatabaseNeedsUpgrade:
        await db.dispose()
        raise
    return db
