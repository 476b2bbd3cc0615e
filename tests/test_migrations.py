"""Migrations: the first migration is the first schema, models and migrations agree, and an
out-of-date database is refused with a message that says what to run."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import bot.store.models  # noqa: F401 - registers tables
from bot.errors import DatabaseError, DatabaseNeedsUpgrade
from bot.store.database import Database, database_url, head_revision


async def test_upgrade_creates_exactly_the_models(db_url: str) -> None:
    db = Database(db_url)
    try:
        before, after = await db.upgrade()
        assert before is None and after == head_revision()

        def diff(conn):  # type: ignore[no-untyped-def]
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, SQLModel.metadata)

        async with db.engine.connect() as conn:
            assert await conn.run_sync(diff) == []
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert {
            "respondent",
            "flow_version",
            "conversation",
            "answer",
            "tag",
            "event",
            "suppression",
        } <= tables
        again = await db.upgrade()
        assert again == (head_revision(), head_revision())
    finally:
        await db.dispose()


async def test_new_empty_database_is_created_on_first_use(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "fresh.db"))
    try:
        assert await db.ensure_ready() is True
        assert await db.ensure_ready() is False
        assert (await db.revision())[0] == head_revision()
    finally:
        await db.dispose()


async def test_outdated_database_is_refused_with_instructions(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "old.db"))
    try:
        await db.upgrade()
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
        with pytest.raises(
            DatabaseNeedsUpgrade, match=r"revision 0003.*run `parley db upgrade --db .*old.db`"
        ):
            await db.ensure_ready()
    finally:
        await db.dispose()


async def test_tables_without_version_are_not_silently_migrated(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "foreign.db"))
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE something_else (id INTEGER)"))
        # `db upgrade` would add Parley's tables to somebody else's database: not advised
        with pytest.raises(DatabaseError, match="not a Parley database") as err:
            await db.ensure_ready()
        assert not isinstance(err.value, DatabaseNeedsUpgrade)
    finally:
        await db.dispose()


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "wal.db"))
    try:
        async with db.engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            fks = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
        assert (mode, fks) == ("wal", 1)
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/test",
            "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        ),
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
    ],
)
def test_database_urls_map_to_async_drivers(given: str, expected: str) -> None:
    assert database_url(given) == expected


def test_a_path_becomes_an_absolute_sqlite_url(tmp_path: Path) -> None:
    assert database_url(str(tmp_path / "p.db")) == f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"


async def test_a_newer_database_is_not_sent_to_db_upgrade(tmp_path: Path) -> None:
    """`db upgrade` cannot go forward to a revision this Parley does not know."""
    import sqlite3

    newer = tmp_path / "newer.db"
    db = Database(str(newer))
    await db.ensure_ready()
    await db.dispose()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    db = Database(str(newer))
    try:
        with pytest.raises(DatabaseError, match="newer Parley than this one"):
            await db.ensure_ready()
    finally:
        await db.dispose()


def test_every_sqlite_connection_overwrites_deleted_rows() -> None:
    """secure_delete is set by Parley, not left to how SQLite was built (Debian's has it on,
    others do not): `parley forget` must leave nothing readable in free pages."""
    from bot.store.database import _sqlite_pragmas

    executed: list[str] = []

    class Cursor:
        def execute(self, sql: str) -> None:
            executed.append(sql)

        def close(self) -> None:
            pass

    class Connection:
        isolation_level: str | None = ""

        def cursor(self) -> Cursor:
            return Cursor()

    _sqlite_pragmas(Connection(), None)
    assert "PRAGMA secure_delete=ON" in executed


async def test_downgrading_past_the_anonymous_queue_keeps_what_waits(db_url: str) -> None:
    """0006 queues anonymous answers; going back to 0005 stores them, rather than drop them."""
    from alembic import command

    from bot.store.database import alembic_config

    db = Database(db_url)
    try:
        await db.upgrade()
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO flow_version (id, flow_id, hash, title, definition, created_at) "
                    "VALUES (1, 'pulse', 'h', 'Pulse', '{}', CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO anonymous_pending (response_id, flow_id, flow_version_id, "
                    "step_id, step_type, value, day, queued_at) VALUES ('r1', 'pulse', 1, "
                    "'mood', 'csat', '4', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )

        def downgrade(conn):  # type: ignore[no-untyped-def]
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0005")

        async with db.engine.begin() as conn:
            await conn.run_sync(downgrade)
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT step_id, value FROM answer"))).all()
        assert [(step, str(value)) for step, value in rows] == [("mood", "4")]
    finally:
        await db.dispose()


async def test_another_programs_database_is_not_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    db = Database(str(path))
    try:
        with pytest.raises(DatabaseError, match="not a Parley database"):
            await db.upgrade()
    finally:
        await db.dispose()
    with sqlite3.connect(path) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert tables == {"invoices"}


def test_only_sqlite_and_postgresql_are_taken() -> None:
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match="SQLite or PostgreSQL, not mysql"):
        database_url("mysql://u@h/x")


async def test_0007_keeps_answers_and_anonymous_answers_stay_unique(db_url: str) -> None:
    """0007 rebuilds answer's anonymous uniqueness as a partial index: stored answers stay,
    a repeated (response, step) is still refused, and going back restores the constraint."""
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    from bot.store.database import alembic_config

    def to(revision: str):  # type: ignore[no-untyped-def]
        def run(conn):  # type: ignore[no-untyped-def]
            config = alembic_config()
            config.attributes["connection"] = conn
            if revision < head_revision():
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)

        return run

    answer = (
        "INSERT INTO answer (id, conversation_id, response_id, flow_id, flow_version_id, "
        "step_id, step_type, value, created_at) VALUES "
        "(:id, NULL, :response, 'pulse', 1, 'mood', 'csat', '4', CURRENT_TIMESTAMP)"
    )
    db = Database(db_url)
    try:
        await db.upgrade()
        async with db.engine.begin() as conn:
            await conn.run_sync(to("0006"))
            await conn.execute(
                text(
                    "INSERT INTO flow_version (id, flow_id, hash, title, definition, created_at) "
                    "VALUES (1, 'pulse', 'h', 'Pulse', '{}', CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(text(answer), {"id": -5, "response": "r1"})
            await conn.execute(text(answer), {"id": 6, "response": None})
            await conn.execute(text(answer), {"id": 7, "response": None})
        async with db.engine.begin() as conn:
            await conn.run_sync(to(head_revision()))
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("conversation"))
            assert "ix_conversation_status" not in {index["name"] for index in indexes}
        for revision in (head_revision(), "0006"):
            async with db.engine.begin() as conn:
                await conn.run_sync(to(revision))
            async with db.engine.connect() as conn:
                ids = (await conn.execute(text("SELECT id FROM answer ORDER BY id"))).scalars()
                assert list(ids) == [-5, 6, 7]
                with pytest.raises(IntegrityError):
                    await conn.execute(text(answer), {"id": 8, "response": "r1"})
                await conn.rollback()
                await conn.execute(text(answer), {"id": 9, "response": None})  # never conflicts
                await conn.rollback()
    finally:
        await db.dispose()
